"""Instances the harness receives (C-GET sub-operations, C-MOVE to its Storage SCP).

A received dataset streams past in PDV fragments. The collector keeps what a sample and
a check need: byte count, the head of the dataset (for Study Instance UID and Number of
Frames), and, when asked, the whole dataset for its digest. A retrieval's arrivals are
tallied (Gathered): counts, frames and bytes, and only the hashed arrivals kept one by one
(verify compares each), so a 24,000-instance C-MOVE costs the harness no memory per instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO

from pydicom.filereader import read_dataset
from pydicom.uid import UID

from bench.studies.integrity import dataset_digest
from server_under_test.upper_layer.association import Association
from server_under_test.upper_layer.messages import Message

HEAD_BYTES = 64 << 10  # the attributes we read come long before this in any XA header
LAST_WANTED_TAG = 0x00280008  # Number of Frames; Study Instance UID (0020,000D) comes before


@dataclass
class Arrival:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    frames: int
    bytes: int
    digest: str = ""  # empty unless the receiver was asked to hash
    move_originator_id: int | None = None


def header_facts(head: bytes, transfer_syntax: str) -> tuple[str, int]:
    """(Study Instance UID, Number of Frames) from the start of a dataset; ('', 1) if unreadable."""
    syntax = UID(transfer_syntax)
    try:
        ds = read_dataset(
            BytesIO(head),
            syntax.is_implicit_VR,
            syntax.is_little_endian,
            stop_when=lambda tag, vr, length: tag > LAST_WANTED_TAG,
        )
        return str(ds.get("StudyInstanceUID", "")), int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:  # a truncated head or an odd dataset: the sample still counts its bytes
        return "", 1


@dataclass
class Gathered:
    """What arrived for one retrieval: totals, and the arrivals that carry a digest (nothing else per instance)."""

    instances: int = 0
    frames: int = 0
    bytes: int = 0
    hashed: list[Arrival] = field(default_factory=list)

    def add(self, arrival: Arrival) -> None:
        self.instances += 1
        self.frames += arrival.frames
        self.bytes += arrival.bytes
        if arrival.digest:
            self.hashed.append(arrival)

    def merge(self, other: "Gathered") -> "Gathered":
        """Both tallies in one (the SCP files arrivals by C-MOVE and, without an originator, by study)."""
        return Gathered(
            self.instances + other.instances,
            self.frames + other.frames,
            self.bytes + other.bytes,
            self.hashed + other.hashed,
        )


class InstanceCollector:
    """Reads one C-STORE request's dataset as it streams in (`receive`) and makes its Arrival."""

    def __init__(self, keep_all: bool, read_header: bool = True):
        self.keep_all = keep_all
        self.read_header = read_header
        self.data = bytearray()
        self.size = 0

    def receive(self, assoc: Association, message: Message) -> Arrival:
        """Read `message`'s dataset off `assoc`, fragment by fragment, keeping what was asked for."""
        for batch in assoc.reader.fragments(message):
            for fragment in batch:
                self.size += len(fragment)
                if self.keep_all or (self.read_header and len(self.data) < HEAD_BYTES):
                    self.data += fragment
        return self.finish(message.command, assoc.transfer_syntax(message.context_id))

    def finish(self, command: dict, transfer_syntax: str) -> Arrival:
        study, frames = header_facts(bytes(self.data[:HEAD_BYTES]), transfer_syntax) if self.read_header else ("", 1)
        return Arrival(
            sop_instance_uid=command.get("AffectedSOPInstanceUID", ""),
            sop_class_uid=command.get("AffectedSOPClassUID", ""),
            study_instance_uid=study,
            frames=frames,
            bytes=self.size,
            digest=dataset_digest(self.data, transfer_syntax) if self.keep_all else "",
            move_originator_id=command.get("MoveOriginatorMessageID"),
        )
