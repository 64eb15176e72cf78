"""Fault runs: kill, stop, pause or restart the archive, or take its network down, during the load; then measure
what each fault cost.

A FaultInjector is a greenlet started with the load: at each fault's `at` it signals the archive's process group
(native) or QEMU (kvm, tcg) and, after `duration`, starts it again on the same data and port (kill, stop, restart) or
lets it continue (pause); network-down takes a guest NIC's link down for `duration`, or the veth to a native archive's
own network namespace. A greenlet, not a thread: the archive it starts again must be forked by the main thread, whose
exit its parent-death signal follows.

After the load, `fault_figures` reads samples.csv and sent.csv: the time from each fault to
the first successful C-ECHO and C-STORE sent after it (recovery), the requests that failed
in between, by status, and a C-GET of every instance acknowledged before the fault (`lost`
must be 0 for a durable archive). A native kill keeps the host's page cache: it tests
durability against a process crash. A guest's kill is a power loss: the guest's page cache dies
with QEMU, and the guest boots again on the same data disk.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass

import gevent
import pandas as pd
from gevent.event import Event

from bench.analysis.aggregate import status_text
from bench.common.errors import UserError
from bench.results.run_record import FaultRecord
from bench.results.samples import SAMPLES_FILE, SENT_FILE, done_mask
from bench.runs.verify import read_rows, retrieval_user, returned_digests
from bench.scenario.faults import FaultSpec
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import FAULT_KINDS
from bench.targets.target import Target

STOP_TIMEOUT = 60.0  # seconds a SIGTERM'd archive may take before SIGKILL


@dataclass
class FaultEvent:
    """What the injector did for one fault (unix_time None: the load ended before it was due)."""

    spec: FaultSpec
    unix_time: float | None = None  # when the signal went
    resumed_unix_time: float | None = None  # when the archive answered again (started, or continued)
    down_unix_time: float | None = (
        None  # when the killed or stopped archive (or guest) had exited, or its link was down
    )
    startup_seconds: float | None = None  # the archive's own start-up, from launch to C-ECHO (kill, stop, restart)
    exit_code: int | None = None
    error: str = ""
    backup: dict | None = None  # a backup: what it copied; a restore: the backup it restored from
    restore: dict | None = None  # a kill or stop with recover = "restore": what the restore took


class FaultInjector:
    """Injects the scenario's faults into a target during the load: start() with the load, finish() after it."""

    def __init__(self, target: Target, faults: list[FaultSpec]):
        if faults and target.kind not in FAULT_KINDS:
            raise UserError(
                f"[[faults]]: the {target.kind} target cannot take faults (only {', '.join(FAULT_KINDS)} "
                "in this version)"
            )
        self.target = target
        self.events = [FaultEvent(spec) for spec in faults]
        self.latest_backup: FaultEvent | None = None
        self.load_started = 0.0
        self._ending = Event()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> FaultInjector:
        self.load_started = time.time()
        if self.events:
            self._greenlet = gevent.spawn(self._inject_all)
        return self

    def finish(self) -> list[FaultEvent]:
        """No fault starts any more; one under way completes (a paused archive continues, a killed one restarts)."""
        self._ending.set()
        if self._greenlet is not None:
            self._greenlet.join()
        return self.events

    def _inject_all(self) -> None:
        for event in self.events:
            if self._ending.wait(max(0.0, self.load_started + event.spec.at - time.time())):
                return
            if event.spec.action == "backup":
                self.latest_backup = event
            elif event.spec.recover == "restore":
                event.backup = self.latest_backup.backup if self.latest_backup else None
            try:
                ACTIONS[event.spec.action](self.target, event)
            except Exception as exc:  # noqa: BLE001 (recorded: the run goes on and shows what followed)
                event.error = f"{type(exc).__name__}: {exc}"
                print(
                    f"pacsbench: warning: fault {event.spec.action} at {event.spec.at:g} s: {event.error}",
                    file=sys.stderr,
                )


def _crash(signum: int, after: float):
    """A fault that ends the archive with `signum` and starts it again `after` seconds (None: the fault's duration)."""

    def act(target: Target, event: FaultEvent) -> None:
        event.unix_time = time.time()
        target.signal_archive(signum)
        event.exit_code = target.wait_for_exit(STOP_TIMEOUT)
        event.down_unix_time = time.time()
        wait = event.spec.duration if after is None else after
        gevent.sleep(max(0.0, event.unix_time + wait - time.time()))
        if event.spec.recover == "restore":
            if not event.backup:
                raise UserError('recover = "restore": the backup before this fault did not complete')
            event.restore = target.restore_data(event.backup)
        event.startup_seconds = round(target.start_again(), 3)
        event.resumed_unix_time = time.time()

    return act


def _pause(target: Target, event: FaultEvent) -> None:
    event.unix_time = time.time()
    target.signal_archive(signal.SIGSTOP)
    try:
        gevent.sleep(event.spec.duration)
    finally:
        target.signal_archive(signal.SIGCONT)  # whatever happens, never leave the archive stopped
    event.resumed_unix_time = time.time()


def _backup(target: Target, event: FaultEvent) -> None:
    event.unix_time = time.time()
    event.backup = {**target.back_up(f"backup-at-{event.spec.at:g}s"), "started_unix_time": event.unix_time}


def _network_down(target: Target, event: FaultEvent) -> None:
    event.unix_time = time.time()
    target.set_network(False)
    # A request sent while the link was still going down (the ip or QMP command takes a few ms) may be answered:
    # that is no recovery, so recovery counts from requests sent once the link is down.
    event.down_unix_time = time.time()
    try:
        gevent.sleep(event.spec.duration)
    finally:
        target.set_network(True)  # whatever happens, never leave the link down
    event.resumed_unix_time = time.time()


ACTIONS = {
    "kill": _crash(signal.SIGKILL, None),
    "stop": _crash(signal.SIGTERM, None),
    "restart": _crash(signal.SIGTERM, 0.0),
    "pause": _pause,
    "backup": _backup,
    "network-down": _network_down,
}


def _seconds(value: float | None) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 3)


def _first_success(samples: pd.DataFrame, operation: str, t: float, sent_from: float) -> float | None:
    """Seconds from `t` to the answer of the first successful `operation` sent at or after `sent_from`."""
    rows = samples[(samples["operation"] == operation) & samples["done"] & (samples["start"] >= sent_from)]
    return _seconds(rows["end"].min() - t) if len(rows) else None


def _outage(samples: pd.DataFrame, event: FaultEvent, load_ended: float) -> dict:
    """Recovery and the requests that failed between the fault and it, by status."""
    t = event.unix_time
    # After a stop, what the archive answered while it shut down (a guest takes seconds) is not a recovery.
    sent_from = event.down_unix_time or t
    first_echo = _first_success(samples, "C-ECHO", t, sent_from)
    first_store = _first_success(samples, "C-STORE", t, sent_from)
    recovery, by = (first_store, "C-STORE") if first_store is not None else (first_echo, "C-ECHO")
    if recovery is None and event.resumed_unix_time is not None:
        recovery, by = _seconds(event.resumed_unix_time - t), "the injector's C-ECHO"
    until = t + recovery if recovery is not None else load_ended
    failed = samples[~samples["done"] & (samples["end"] >= t) & (samples["end"] <= until)]
    by_status = Counter(status_text(int(code)) for code in failed["status"])
    return {
        "first_echo_seconds": first_echo,
        "first_store_seconds": first_store,
        "recovery_seconds": recovery,
        "recovery_by": by if recovery is not None else None,
        "failed_during_outage": sum(by_status.values()),
        "failed_by_status": dict(by_status.most_common()),
    }


def _acknowledged_before(sent: list[dict], samples: pd.DataFrame, t: float) -> list[dict]:
    """sent.csv rows acknowledged before `t`: by their C-STORE's answer; rows without one (prefill) before the load."""
    stores = samples[(samples["operation"] == "C-STORE") & samples["done"]]
    answered = dict(zip(stores["sop_instance_uid"], stores["end"]))
    return [row for row in sent if answered.get(row["sop_instance_uid"], t - 1) < t]


def _durability(rows: list[dict], returned: dict[str, str]) -> dict:
    lost = sum(row["sop_instance_uid"] not in returned for row in rows)
    changed = sum(returned.get(row["sop_instance_uid"], row["digest"]) != row["digest"] for row in rows)
    return {"acknowledged_before": len(rows), "lost": lost, "changed": changed}


def _restore_durability(
    event: FaultEvent, before_backup: list[dict], before_fault: list[dict], returned: dict[str, str]
) -> dict:
    """After a restore: `lost` counts what the backup should have kept (acknowledged before it started: must
    be 0); what was acknowledged between the backup and the fault is the recovery point's price."""
    kept = {row["sop_instance_uid"] for row in before_backup}
    after = [row for row in before_fault if row["sop_instance_uid"] not in kept]
    return {
        **_durability(before_backup, returned),
        "lost_counted_from": "the backup",
        "recovery_point_seconds": round(event.unix_time - event.backup["started_unix_time"], 3),
        "acknowledged_after_backup": len(after),
        "lost_after_backup": sum(row["sop_instance_uid"] not in returned for row in after),
    }


def fault_figures(
    events: list[FaultEvent], run_dir, load_started: float, load_ended: float, peer, client: ClientSpec
) -> list[FaultRecord]:
    """run.json["faults"]: per fault what happened, its recovery and what it lost (C-GET from `peer`, still up)."""
    samples = pd.read_csv(run_dir / SAMPLES_FILE, keep_default_na=False)
    samples["end"] = samples["start"] + samples["latency_ms"] / 1000.0
    samples["done"] = done_mask(samples["status"], samples["operation"])
    sent = read_rows(run_dir / SENT_FILE)
    fired = [e for e in events if e.unix_time is not None]
    subsets = {id(e): _acknowledged_before(sent, samples, e.unix_time) for e in fired}
    restored = [e for e in fired if e.backup and e.spec.action != "backup"]
    # A restore brings back what the backup held: what must survive it is what was acknowledged before the backup.
    subsets |= {("backup", id(e)): _acknowledged_before(sent, samples, e.backup["started_unix_time"]) for e in restored}
    wanted = {row["study_instance_uid"] for rows in subsets.values() for row in rows}
    returned, failed_requests = {}, []
    if wanted:
        user = retrieval_user(peer, sent, client)
        returned, failed_requests = returned_digests(user, sorted(wanted))
        user.release()
    figures = []
    for event in events:
        record = {"action": event.spec.action, "at": event.spec.at, "duration": event.spec.duration}
        if event.unix_time is None:
            error = event.error or "the load ended before it was due"
            figures.append(FaultRecord(**record, happened=False, error=error))
            continue
        record.update(
            happened=True,
            into_load_seconds=round(event.unix_time - load_started, 3),
            unix_time=round(event.unix_time, 3),
        )
        if event.spec.action == "backup":
            record["backup"] = event.backup
        else:
            record.update(
                down_seconds=_seconds(event.down_unix_time - event.unix_time) if event.down_unix_time else None,
                startup_seconds=event.startup_seconds,
                exit_code=event.exit_code,
                **_outage(samples, event, load_ended),
                **(
                    _restore_durability(event, subsets[("backup", id(event))], subsets[id(event)], returned)
                    if event.restore
                    else _durability(subsets[id(event)], returned)
                ),
                retrieve_failures=failed_requests[:10],
            )
        if event.restore:
            record.update(recover="restore", restore=event.restore)
        if event.error:
            record["error"] = event.error
        figures.append(FaultRecord.model_validate(record))
    return figures


def fault_line(figure: FaultRecord) -> str:
    """One line per fault for the terminal."""
    if not figure.happened:
        return f"fault {figure.action} at {figure.at:g} s: not injected ({figure.error})"
    if figure.action == "backup":
        b = figure.backup
        return (
            f"backup at {figure.into_load_seconds:g} s: {b.instances} instances, {b.bytes / 1e6:.1f} MB "
            f"in {b.seconds:g} s ({b.mb_per_s:g} MB/s) while the load went on"
        )
    if figure.recover == "restore":
        r = figure.restore
        return (
            f"fault {figure.action} at {figure.into_load_seconds:g} s, restored from the backup "
            f"{figure.recovery_point_seconds:g} s before it in {r.seconds:g} s: recovered in "
            f"{figure.recovery_seconds} s, {figure.lost} of {figure.acknowledged_before} instances "
            f"acknowledged before the backup lost, {figure.changed} changed; "
            f"{figure.lost_after_backup} of {figure.acknowledged_after_backup} acknowledged after it lost "
            "(the recovery point)"
        )
    recovery = figure.recovery_seconds
    return (
        f"fault {figure.action} at {figure.into_load_seconds:g} s: recovered in "
        f"{'never' if recovery is None else f'{recovery:g} s'} (by {figure.recovery_by}), "
        f"{figure.failed_during_outage} requests failed meanwhile, {figure.lost} of "
        f"{figure.acknowledged_before} instances acknowledged before it lost, {figure.changed} changed"
    )
