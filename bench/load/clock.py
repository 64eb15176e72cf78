"""A worker's clock against the master's, measured when it joins (NTP-style).

Sample rows carry Unix times from the clock of the process that made them; a worker on
another machine may be seconds off, which would misplace its rows in the per-second windows,
the warm-up cut and against the resource series. So the master asks each joining worker for
its time a few times, one request at a time, over locust custom messages:

    offset = worker_time - (sent + received) / 2        (sent, received: the master's clock)

The worker's reading lies between `sent` and `received`, so an exchange's offset is off by at
most half its round trip; the exchange with the smallest round trip is kept, and its round
trip recorded as the bound. The master subtracts the offset from that worker's time columns
(bench.results.samples.on_master_clock). Measured once: drift during a run is not followed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

CLOCK_PING, CLOCK_PONG = "pacsbench_clock_ping", "pacsbench_clock_pong"
EXCHANGES = 8  # a few: one of them likely crosses an idle network and an idle peer


@dataclass(frozen=True)
class Exchange:
    sent: float  # the master's clock before the request left
    worker_time: float  # the worker's clock when it answered
    received: float  # the master's clock when the answer arrived

    @property
    def round_trip(self) -> float:
        return self.received - self.sent

    @property
    def offset(self) -> float:
        """The worker's clock less the master's."""
        return self.worker_time - (self.sent + self.received) / 2


def best_exchange(exchanges: list[Exchange]) -> Exchange:
    """The exchange with the smallest round trip: the tightest bound on its offset's error."""
    return min(exchanges, key=lambda exchange: exchange.round_trip)


class ClockProbe:
    """The master's side for one worker: `exchanges` request/answer rounds, one at a time, then `done`.

    `send(data)` sends a CLOCK_PING to that worker; the master's CLOCK_PONG listener calls
    `on_answer` with the answer's data.
    """

    def __init__(self, send: Callable[[dict], None], done: Callable[[Exchange], None], exchanges: int = EXCHANGES):
        self.send, self.done, self.wanted = send, done, exchanges
        self.exchanges: list[Exchange] = []
        self._sent = 0.0

    def start(self) -> None:
        self._ask()

    def _ask(self) -> None:
        self._sent = time.time()
        self.send({"exchange": len(self.exchanges)})

    def on_answer(self, data: dict) -> None:
        received = time.time()  # first: whatever runs before this line counts as network time
        if data["exchange"] != len(self.exchanges):
            return  # not the answer to the request in flight
        self.exchanges.append(Exchange(self._sent, float(data["time"]), received))
        if len(self.exchanges) < self.wanted:
            self._ask()
        else:
            self.done(best_exchange(self.exchanges))


def answer_clock_ping(environment, msg) -> None:
    """The worker's side: its own time, at once (a locust message listener, run inline)."""
    environment.runner.send_message(CLOCK_PONG, {"exchange": msg.data["exchange"], "time": time.time()})
