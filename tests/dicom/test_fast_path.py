"""The harness's client and Storage SCP on the archive's upper layer against DCMTK: bytes on the
wire, both roles, plain and under gevent."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT

from bench.common.processes import free_local_port as free_port
from bench.dicom.peer import AssociationFailed, Peer
from bench.dicom.scu import ServiceUser, query_proposals, storage_proposals
from bench.dicom.storage_scp import StorageSCP
from bench.load.send import scan_file, scan_folder
from bench.studies.integrity import dataset_digest
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile
from server_under_test.upper_layer.messages import UNLIMITED_SEND_PDU, pdata_parts, split_pdvs

NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def _pool(syntax: str) -> StudyPool:
    return StudyPool.prepare(load_profile("tiny"), 2, 3, progress=False, transfer_syntax=syntax)


@pytest.fixture(scope="module")
def explicit_pool():
    return _pool("explicit")


@pytest.fixture(scope="module")
def jpegls_pool():
    return _pool("jpeg-ls")


class DcmtkSink:
    """DCMTK storescp writing exactly what it receives (+B) into a folder."""

    def __init__(self, storescp: str, folder: Path, max_pdu: int = 16384):
        tool = storescp
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process = subprocess.Popen(
            [tool, "+B", "+xa", "-pdu", str(max_pdu), "-aet", "SINK", "-od", str(folder), str(self.port)],
            env=NODELAY,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.peer = Peer("127.0.0.1", self.port, "SINK")
        _wait_until_echo(self.peer)

    def stored(self) -> dict[str, bytes]:
        """SOP Instance UID -> the dataset bytes storescp wrote (after the file meta group)."""
        out = {}
        for path in self.folder.iterdir():
            item = scan_file(path)
            out[item.sop_instance_uid] = path.read_bytes()[item.offset :]
        return out

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _wait_until_echo(peer: Peer, timeout: float = 15.0) -> None:
    user = ServiceUser(peer, "TEST", query_proposals()[:1], timeout=2.0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            user.connect()
            assert user.echo() == 0
            user.release()
            return
        except AssociationFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def dcmtk_sink(dcmtk, tmp_path):
    sink = DcmtkSink(dcmtk.storescp, tmp_path / "received")
    yield sink
    sink.stop()


def _store_copies(pool: StudyPool, peer: Peer, studies: int) -> dict[str, bytes]:
    """Store `studies` fresh pool studies on one association; SOP Instance UID -> bytes sent."""
    user = ServiceUser(peer, "PACSBENCH-TEST", storage_proposals(pool.sop_classes, pool.transfer_syntaxes))
    user.connect()
    sent = {}
    for _ in range(studies):
        for copy in pool.next_study():
            chunks = copy.encoded_chunks()
            assert user.store(copy.sop_class_uid, copy.sop_instance_uid, copy.transfer_syntax_uid, chunks) == 0
            sent[copy.sop_instance_uid] = b"".join(bytes(c) for c in chunks)
            assert dataset_digest(sent[copy.sop_instance_uid], copy.transfer_syntax_uid) == copy.digest()
    user.release()
    return sent


@pytest.mark.parametrize("pool_name", ["explicit_pool", "jpegls_pool"])
def test_storescp_bit_preserving_stores_exactly_what_the_fast_path_sent(pool_name, request, dcmtk_sink):
    pool = request.getfixturevalue(pool_name)
    sent = _store_copies(pool, dcmtk_sink.peer, 2)  # 16 KB PDUs: every instance spans many PDUs
    assert dcmtk_sink.stored() == sent


def test_the_fast_path_under_gevent_sends_the_same_bytes(dcmtk, explicit_pool, tmp_path):
    sink = DcmtkSink(dcmtk.storescp, tmp_path / "received", max_pdu=131072)
    try:
        script = (
            "from gevent import monkey; monkey.patch_all()\n"
            "import hashlib, json, sys\n"
            "from bench.dicom.peer import Peer\n"
            "from bench.studies.pool import StudyPool\nfrom bench.studies.profile import load_profile\n"
            "from bench.dicom.scu import ServiceUser, storage_proposals\n"
            "pool = StudyPool.prepare(load_profile('tiny'), 2, 3, progress=False)\n"
            f"user = ServiceUser(Peer('127.0.0.1', {sink.port}, 'SINK'), 'GEVENT', "
            "storage_proposals(pool.sop_classes, pool.transfer_syntaxes))\n"
            "user.connect()\nsent = {}\n"
            "for copy in pool.next_study() + pool.next_study():\n"
            "    chunks = copy.encoded_chunks()\n"
            "    assert user.store(copy.sop_class_uid, copy.sop_instance_uid, copy.transfer_syntax_uid, chunks) == 0\n"
            "    sent[copy.sop_instance_uid] = hashlib.sha256(b''.join(bytes(c) for c in chunks)).hexdigest()\n"
            "user.release()\nprint(json.dumps(sent))\n"
        )
        sent = _json_from_child(script)
        stored = {uid: hashlib.sha256(data).hexdigest() for uid, data in sink.stored().items()}
        assert len(sent) >= 4 and stored == sent
    finally:
        sink.stop()


def _json_from_child(script: str):
    """Run `script` in a fresh Python (gevent patches a whole process); what its last line prints, as JSON."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_client_and_storage_scp_share_one_gevent_process_cooperatively():
    """Both ends in greenlets of one process: 16 MB datasets overflow the socket buffers, so a
    send or receive that blocked the process instead of yielding would stall until the timeout."""
    script = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import json, time\n"
        "from bench.dicom.peer import Peer\n"
        "from bench.dicom.scu import ServiceUser, storage_proposals\n"
        "from bench.dicom.storage_scp import StorageSCP\n"
        "XA, EXPLICIT = '1.2.840.10008.5.1.4.1.1.12.1', '1.2.840.10008.1.2.1'\n"
        "scp = StorageSCP('GREENLETS', timeout=10).start()\n"
        "user = ServiceUser(Peer('127.0.0.1', scp.port, 'GREENLETS'), 'GEVENT', storage_proposals([XA], [EXPLICIT]),"
        " timeout=10)\n"
        "data = bytes(16 << 20)\n"
        "started = time.monotonic()\n"
        "user.connect()\n"
        "statuses = [user.store(XA, f'1.2.3.{n}', EXPLICIT, [data[:4096], memoryview(data)[4096:]])\n"
        "            for n in range(3)]\n"
        "user.release()\n"
        "gathered = scp.collect(0, '')\n"
        "arrived = [gathered.instances, gathered.bytes]\n"
        "print(json.dumps([statuses, arrived, scp.instances, time.monotonic() - started]))\n"
    )
    statuses, arrived, instances, seconds = _json_from_child(script)
    assert statuses == [0, 0, 0] and instances == 3 and arrived == [3, 3 * (16 << 20)]
    assert seconds < 10  # no stall that only the socket timeout ended


def test_storescu_into_the_harness_scp_arrives_byte_identical(dcmtk, tiny_studies):
    storescu = dcmtk.storescu
    echoscu = dcmtk.echoscu
    scp = StorageSCP("HARNESS", digests=True).start()
    try:
        files = scan_folder(tiny_studies / "study-0000")
        assert subprocess.run([echoscu, "-aec", "HARNESS", "127.0.0.1", str(scp.port)], timeout=30).returncode == 0
        result = subprocess.run(
            [storescu, "-aec", "HARNESS", "127.0.0.1", str(scp.port), *[str(f.path) for f in files]],
            env=NODELAY,
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        study = str(__import__("pydicom").dcmread(files[0].path).StudyInstanceUID)
        arrived = {a.sop_instance_uid: a for a in scp.collect(0, study).hashed}
        assert scp.instances == len(files) == len(arrived)
        for item in files:
            data = item.path.read_bytes()[item.offset :]
            arrival = arrived[item.sop_instance_uid]
            assert arrival.digest == dataset_digest(data, item.transfer_syntax_uid)
            assert (arrival.bytes, arrival.frames, arrival.study_instance_uid) == (len(data), item.frames, study)
    finally:
        scp.stop()


def send_command(folder: Path, port: int, aet: str, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench.cli", "send", str(folder), "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.run([*command, "--aet", aet, *options], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_send_command_stores_every_file_and_prints_json(tiny_studies, dcmtk_sink):
    result = send_command(tiny_studies, dcmtk_sink.port, "SINK", "--associations", "2", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    files = scan_folder(tiny_studies)
    assert figures["instances"] == len(files) and figures["failures"] == 0
    assert set(figures) == {"instances", "seconds", "instances_per_s", "frames_per_s", "mb_per_s", "failures"}
    frames = sum(f.frames for f in files)
    assert figures["frames_per_s"] == pytest.approx(frames / figures["seconds"], rel=0.01)
    assert dcmtk_sink.stored() == {f.sop_instance_uid: f.path.read_bytes()[f.offset :] for f in files}


def test_send_to_a_closed_port_fails_every_file_with_one_line_each(tiny_studies, unused_port):
    result = send_command(tiny_studies, unused_port, "NOBODY", "--timeout", "3")
    assert result.returncode == 1
    assert result.stdout.strip().endswith(f"{len(scan_folder(tiny_studies))} failures")
    errors = result.stderr.strip().splitlines()
    assert errors and all(line.startswith("pacsbench: error: ") and "connection refused" in line for line in errors)


def test_send_needs_dicom_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not DICOM")
    result = send_command(tmp_path, 104, "X")
    assert result.returncode == 2
    assert result.stderr.strip() == f"pacsbench: error: no DICOM files (Part 10, with file meta) under {tmp_path}"


@pytest.mark.parametrize("max_pdu", [0, 16384, 4096 + 6])
@pytest.mark.parametrize("sizes", [[0], [1], [5000, 0, 3], [4096, 4096], [70000]])
def test_pdata_parts_cut_any_chunks_into_valid_pdus(sizes, max_pdu):
    chunks = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    stream = b"".join(bytes(p) for p in pdata_parts(5, False, chunks, max_pdu))
    data, at, last_flags = b"", 0, []
    while at < len(stream):
        pdu_type, length = stream[at], int.from_bytes(stream[at + 2 : at + 6], "big")
        assert pdu_type == 4 and length <= (max_pdu or UNLIMITED_SEND_PDU)
        for context_id, flags, fragment in split_pdvs(memoryview(stream[at + 6 : at + 6 + length])):
            assert context_id == 5 and not flags & 0x01
            data += bytes(fragment)
            last_flags.append(flags & 0x02)
        at += 6 + length
    assert data == b"".join(chunks)
    assert last_flags[-1] and not any(last_flags[:-1])  # exactly the final fragment says "last"
