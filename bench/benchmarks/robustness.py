"""Robustness: throw malformed PDUs and datasets, slow connections and an association flood
at a DICOM archive, and print per case what it answered, how fast, and whether it still
answers C-ECHO afterwards.

    python -m bench.benchmarks.robustness --port 11112 [--aet PACSBENCH] [--host 127.0.0.1]
        [--flood 100] [--slow-seconds 40] [--only CASE ...]

Every socket has a timeout and every case a bound in bytes, connections and seconds, so the
script ends whatever the archive does. It talks to 127.0.0.1 only, unless --host names
another address and --own-host says that machine is a test archive of yours (a guest or a
network namespace): these cases are attacks, never to be thrown at someone else's server.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pynetdicom.sop_class import Verification

from server_under_test.upper_layer.association import (
    Association,
    AssociationRejected,
    encode_request,
    proposed_context,
    request,
)
from server_under_test.upper_layer.dimse import echo_request, encode_command, store_request
from server_under_test.upper_layer.messages import pdata_parts
from server_under_test.upper_layer.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    P_DATA_TF,
    PDU_NAMES,
    ConnectionClosed,
    LinkLost,
    PeerAborted,
    Wire,
)

CALLING_AE = "ROBUSTNESS"
ANSWER_TIMEOUT = 10.0  # seconds to wait for an answer to a malformed PDU or dataset
MAX_FLOOD = 1000


@dataclass
class Outcome:
    case: str
    answer: str
    seconds: float
    echo_after: str = ""


@dataclass
class Archive:
    host: str
    port: int
    ae_title: str

    def connect(self, timeout: float = ANSWER_TIMEOUT) -> Wire:
        return Wire(socket.create_connection((self.host, self.port), timeout=timeout), timeout)

    def associate(self, max_pdu: int = 16384, timeout: float = ANSWER_TIMEOUT) -> Association:
        contexts = [
            proposed_context(Verification, [ExplicitVRLittleEndian]),
            proposed_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian]),
        ]
        return request(self.host, self.port, CALLING_AE, self.ae_title, contexts, max_pdu, timeout)

    def request_pdu(
        self, calling: bytes = CALLING_AE.encode(), called: bytes | None = None, max_pdu: int = 16384
    ) -> bytes:
        """An A-ASSOCIATE-RQ proposing Verification, with raw AE title fields."""
        pdu = bytearray(encode_request("X", "X", [proposed_context(Verification, [ExplicitVRLittleEndian])], max_pdu))
        pdu[10:26] = (called or self.ae_title.encode()).ljust(16, b" ")
        pdu[26:42] = calling.ljust(16, b" ")
        return bytes(pdu)


# -- what came back ------------------------------------------------------------------------
def describe_pdu(pdu_type: int, body) -> str:
    body = bytes(body)
    if pdu_type == A_ASSOCIATE_RJ and len(body) >= 4:
        return f"A-ASSOCIATE-RJ result {body[1]} source {body[2]} reason {body[3]}"
    if pdu_type == A_ABORT and len(body) >= 4:
        return f"A-ABORT source {body[2]} reason {body[3]}"
    return PDU_NAMES.get(pdu_type, f"PDU 0x{pdu_type:02X}")


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, PeerAborted):
        return f"A-ABORT ({exc})".replace("the peer aborted the association ", "")
    if isinstance(exc, ConnectionClosed):
        return "closed without an answer"
    if isinstance(exc, ConnectionResetError):
        return "connection reset without an answer"
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    if isinstance(exc, AssociationRejected):
        return f"A-ASSOCIATE-RJ result {exc.result} source {exc.source} reason {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def answer_on(wire: Wire) -> str:
    """The next PDU the archive sends on `wire`, described."""
    try:
        pdu_type, body = wire.read_pdu(0)
        return describe_pdu(pdu_type, body)
    except (LinkLost, OSError) as exc:
        return describe_failure(exc)


def send_raw(archive: Archive, data: bytes, timeout: float = ANSWER_TIMEOUT) -> str:
    wire = archive.connect(timeout)
    try:
        wire.send_all([data])
        return answer_on(wire)
    finally:
        wire.close()


def dimse_answer(assoc: Association) -> str:
    """The archive's response to the message just sent (its status), or what ended the association."""
    try:
        message = assoc.reader.read()
        comment = message.command.get("ErrorComment", "")
        return f"status 0x{int(message.command.get('Status', -1)):04X}" + (f" ({comment})" if comment else "")
    except (LinkLost, OSError) as exc:
        return describe_failure(exc)


def still_answers_echo(archive: Archive) -> str:
    try:
        assoc = archive.associate(timeout=ANSWER_TIMEOUT)
    except (AssociationRejected, LinkLost, OSError) as exc:
        return f"no: {describe_failure(exc)}"
    try:
        context = assoc.context_id(Verification)
        assoc.send(context, echo_request(1))
        status = assoc.reader.read().command.get("Status")
        return "yes" if status == 0 else f"no: status {status}"
    except (LinkLost, OSError) as exc:
        return f"no: {describe_failure(exc)}"
    finally:
        assoc.release()


# -- malformed PDUs ----------------------------------------------------------------------------
def garbage(archive: Archive) -> str:
    return send_raw(archive, bytes(range(0x09, 0x49)))


def huge_associate_rq(archive: Archive) -> str:
    return send_raw(archive, b"\x01\x00" + (1 << 30).to_bytes(4, "big") + archive.request_pdu()[6:])


def huge_release_rq(archive: Archive) -> str:
    return send_raw(archive, b"\x05\x00" + (1 << 30).to_bytes(4, "big") + b"\x00" * 4)


def garbled_context(archive: Archive) -> str:
    fixed = archive.request_pdu()[6:74]
    items = b"\x20\x00\x00\x08" + b"\xff" * 8
    return send_raw(archive, b"\x01\x00" + len(fixed + items).to_bytes(4, "big") + fixed + items)


def non_ascii_calling_ae(archive: Archive) -> str:
    return send_raw(archive, archive.request_pdu(calling=b"BAD\xe9AE"))


def non_ascii_called_ae(archive: Archive) -> str:
    return send_raw(archive, archive.request_pdu(called=b"BAD\xe9AE"))


def tiny_max_pdu_then_echo(archive: Archive) -> str:
    """Propose a maximum PDU of 6 bytes; if accepted, ask for a C-ECHO (its response cannot fit)."""
    wire = archive.connect()
    try:
        wire.send_all([archive.request_pdu(max_pdu=6)])
        pdu_type, body = wire.read_pdu(0)
        if pdu_type != A_ASSOCIATE_AC:
            return describe_pdu(pdu_type, body)
        wire.send_all(pdata_parts(1, True, [encode_command(echo_request(1))], 16384))
        return "A-ASSOCIATE-AC, then C-ECHO: " + answer_on(wire)
    except (LinkLost, OSError) as exc:
        return describe_failure(exc)
    finally:
        wire.close()


def on_association(archive: Archive, data: bytes) -> str:
    """Send raw bytes on an established association; what comes back."""
    try:
        assoc = archive.associate()
    except (AssociationRejected, LinkLost, OSError) as exc:
        return f"association failed: {describe_failure(exc)}"
    try:
        assoc.wire.send_all([data])
        return answer_on(assoc.wire)
    finally:
        assoc.wire.close()


def oversized_pdata(archive: Archive) -> str:
    """A P-DATA-TF declaring 64 MiB, beyond any maximum PDU the archive is likely to announce."""
    return on_association(archive, struct.pack(">BBI", P_DATA_TF, 0, 64 << 20) + b"\x00" * 64)


def pdv_longer_than_pdu(archive: Archive) -> str:
    return on_association(archive, struct.pack(">BBIIBB", P_DATA_TF, 0, 12, 5000, 1, 0x03) + b"\x00" * 6)


def garbage_command(archive: Archive) -> str:
    return on_association(archive, b"".join(bytes(p) for p in pdata_parts(1, True, [b"\x08\x00" * 20], 16384)))


# -- malformed datasets --------------------------------------------------------------------------
def element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HH2sH", group, number, vr, len(value)) + value


def store_dataset(archive: Archive, dataset: bytes, sop_uid: str, command_uid: bytes | None = None) -> str:
    """C-STORE a raw explicit VR little endian dataset as Secondary Capture; the status, or what happened."""
    try:
        assoc = archive.associate()
    except (AssociationRejected, LinkLost, OSError) as exc:
        return f"association failed: {describe_failure(exc)}"
    try:
        context = assoc.context_id(SecondaryCaptureImageStorage)
        if context is None:
            return "Secondary Capture not accepted"
        command = encode_command(store_request(1, SecondaryCaptureImageStorage, sop_uid))
        if command_uid is not None:
            command = command.replace(sop_uid.encode(), command_uid)
        assoc.wire.send_all(
            pdata_parts(context, True, [command], assoc.peer_max_pdu)
            + pdata_parts(context, False, [dataset], assoc.peer_max_pdu)
        )
        return dimse_answer(assoc)
    finally:
        assoc.release(timeout=2)


def identifying(sop_uid: bytes) -> bytes:
    sop_class = SecondaryCaptureImageStorage.encode()
    return element(0x0008, 0x0016, b"UI", sop_class) + element(0x0008, 0x0018, b"UI", sop_uid)


def study_and_series() -> bytes:
    return element(0x0020, 0x000D, b"UI", generate_uid().encode()) + element(
        0x0020, 0x000E, b"UI", generate_uid().encode()
    )


def nested_sequences(archive: Archive) -> str:
    depth = 500
    sequence = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)  # undefined length
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    sop_uid = generate_uid()
    nested = (sequence + item) * depth + closing * depth
    return store_dataset(archive, identifying(sop_uid.encode()) + nested + study_and_series(), sop_uid)


def non_ascii_sop_uid(archive: Archive) -> str:
    sop_uid = generate_uid()
    bad = sop_uid[:-1].encode() + b"\xe9"
    return store_dataset(archive, identifying(bad) + study_and_series(), sop_uid, command_uid=bad)


def huge_declared_element(archive: Archive) -> str:
    """An element (Patient Comments, UT) declaring 4 GB minus 16 bytes, with 8 behind it."""
    sop_uid = generate_uid()
    dataset = identifying(sop_uid.encode()) + struct.pack("<HH2sHI", 0x0010, 0x4000, b"UT", 0, 0xFFFFFFF0) + b"x" * 8
    return store_dataset(archive, dataset, sop_uid)


# -- slow connections and floods ----------------------------------------------------------------
def wait_for_answer(wire: Wire, seconds: float) -> str:
    wire.sock.settimeout(seconds)
    return answer_on(wire)


def silent_connection(archive: Archive, seconds: float) -> str:
    """Connect and say nothing: does the archive give up (ARTIM), and when?"""
    wire = archive.connect()
    try:
        return wait_for_answer(wire, seconds)
    finally:
        wire.close()


def dribbled_request(archive: Archive, seconds: float) -> str:
    """An A-ASSOCIATE-RQ one byte per second (never finished within `seconds`)."""
    wire = archive.connect()
    try:
        pdu = archive.request_pdu()
        deadline = time.monotonic() + seconds
        for byte in pdu[:-1]:
            if time.monotonic() > deadline:
                return f"no answer within {seconds:.0f} s (still open)"
            wire.send_all([bytes([byte])])
            wire.sock.settimeout(1.0)
            try:
                pdu_type, body = wire.read_pdu(0)
                return describe_pdu(pdu_type, body)
            except TimeoutError:
                continue
            except (LinkLost, OSError) as exc:
                return describe_failure(exc)
        return "the whole request went out unanswered"
    finally:
        wire.close()


def flood(archive: Archive, connections: int) -> str:
    """`connections` associations requested at once and held; count the answers."""
    answers: Counter = Counter()
    held: list[Association] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            assoc = archive.associate(timeout=30)
            with lock:
                held.append(assoc)
                answers["A-ASSOCIATE-AC"] += 1
        except (AssociationRejected, LinkLost, OSError) as exc:
            with lock:
                answers[describe_failure(exc)] += 1

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    echo_while_full = still_answers_echo(archive)
    for assoc in held:
        assoc.release(timeout=2)
    counts = ", ".join(f"{n} {what}" for what, n in answers.most_common())
    return f"{counts}; C-ECHO while they are held: {echo_while_full}"


def half_open_flood(archive: Archive, connections: int, seconds: float) -> str:
    """`connections` TCP connections that never send an RQ; after how long is a C-ECHO served again?"""
    sockets = []
    try:
        for _ in range(connections):
            try:
                sockets.append(socket.create_connection((archive.host, archive.port), timeout=ANSWER_TIMEOUT))
            except OSError as exc:
                return f"connection {len(sockets) + 1} of {connections} not accepted: {describe_failure(exc)}"
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if still_answers_echo(archive) == "yes":
                return f"{len(sockets)} half-open; C-ECHO served after {time.monotonic() - started:.1f} s"
            time.sleep(1.0)
        return f"{len(sockets)} half-open; no C-ECHO served within {seconds:.0f} s"
    finally:
        for sock in sockets:
            sock.close()


def cases(flood_size: int, slow_seconds: float) -> dict:
    return {
        "garbage-bytes": garbage,
        "a-associate-rq-declaring-1-gib": huge_associate_rq,
        "a-release-rq-declaring-1-gib": huge_release_rq,
        "garbled-presentation-context": garbled_context,
        "non-ascii-calling-ae": non_ascii_calling_ae,
        "non-ascii-called-ae": non_ascii_called_ae,
        "max-pdu-6-then-c-echo": tiny_max_pdu_then_echo,
        "p-data-declaring-64-mib": oversized_pdata,
        "pdv-longer-than-its-pdu": pdv_longer_than_pdu,
        "garbage-command-set": garbage_command,
        "500-nested-sequences": nested_sequences,
        "non-ascii-sop-instance-uid": non_ascii_sop_uid,
        "element-declaring-4-gb": huge_declared_element,
        "silent-connection": lambda a: silent_connection(a, slow_seconds),
        "request-at-1-byte-per-second": lambda a: dribbled_request(a, slow_seconds),
        f"flood-{flood_size}-associations": lambda a: flood(a, flood_size),
        f"half-open-{flood_size}-connections": lambda a: half_open_flood(a, flood_size, slow_seconds),
    }


def run_case(archive: Archive, name: str, case) -> Outcome:
    started = time.monotonic()
    try:
        answer = case(archive)
    except Exception as exc:  # the script reports what happened, whatever it was
        answer = f"{type(exc).__name__}: {exc}"
    outcome = Outcome(name, answer, time.monotonic() - started)
    outcome.echo_after = still_answers_echo(archive)
    return outcome


def print_table(outcomes: list[Outcome]) -> None:
    width = max(len(o.case) for o in outcomes)
    print(f"{'case':<{width}}  {'seconds':>7}  {'C-ECHO after':<12}  answer")
    for o in outcomes:
        print(f"{o.case:<{width}}  {o.seconds:7.2f}  {o.echo_after:<12}  {o.answer}")


def check_host(host: str, own_host: bool) -> None:
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        loopback = False
    if not loopback and not own_host:
        raise SystemExit(f"robustness: {host} is not this machine; add --own-host if it is a test archive of yours")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmarks.robustness", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aet", default="PACSBENCH", help="the archive's AE title")
    parser.add_argument("--own-host", action="store_true", help="--host is a test archive of yours (guest, namespace)")
    parser.add_argument("--flood", type=int, default=100, help=f"connections in the flood cases (at most {MAX_FLOOD})")
    parser.add_argument("--slow-seconds", type=float, default=40.0, help="how long the slow cases wait at most")
    parser.add_argument("--only", nargs="*", help="run only these cases (by name)")
    args = parser.parse_args(argv)
    check_host(args.host, args.own_host)
    archive = Archive(args.host, args.port, args.aet)
    if still_answers_echo(archive) != "yes":
        print(f"robustness: {args.host}:{args.port} ({args.aet}) does not answer C-ECHO", file=sys.stderr)
        return 2
    chosen = cases(min(args.flood, MAX_FLOOD), args.slow_seconds)
    outcomes = [run_case(archive, name, case) for name, case in chosen.items() if not args.only or name in args.only]
    print_table(outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
