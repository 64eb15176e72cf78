"""DICOMweb users against Orthanc's DICOMweb plugin and our archive (real peers): the STOW-RS body and the WADO-RS
parser, a PS3.18 failure reason in the error column, a viewer's WADO-RS (metadata, then frames checked against the
pool), a mixed DIMSE + DICOMweb run and its side-by-side report, and the one-line errors of a target without a
DICOMweb side."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from functools import partial
from html import unescape
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT
from helpers.dicomweb import start_web_archive
from helpers.tools import missing

from bench.load.dicomweb import (
    DICOM_JSON,
    FRAMES_ACCEPT,
    WADO_ACCEPT,
    PoolFrames,
    described_instances,
    frame_batches,
    read_frames,
    read_instances,
    stow_body,
    stow_outcome,
)
from bench.scenario.file import Scenario, dicomweb_gap, with_dicomweb
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import OrthancSpec
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile
from bench.targets import make_target
from bench.targets.installed import DICOMWEB_PLUGIN

TARGET = """
[target]
kind = "orthanc"
dicomweb = true
"""
MIXED = """
[studies]
profile = "tiny"
pool = 2
prefill = 2
[load]
duration = 6
stop_timeout = 20
[users.modality]
count = 1
studies_per_hour = 1200
[users.workstation]
count = 1
retrieve = "get"
reading_images_per_s = 100
check_digests = true
[users.stow]
count = 1
studies_per_hour = 1800
[users.qido]
count = 1
queries_per_s = 4
[users.wado]
count = 1
reading_images_per_s = 100
check_digests = true
"""
DICOMWEB_OPERATIONS = ("STOW-RS", "QIDO-RS", "WADO-RS")


def pacsbench(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def orthanc_web(orthanc, tmp_path_factory):
    """One Orthanc with its DICOMweb plugin for the module's tests (skipped without the plugin, failed in CI)."""
    if not DICOMWEB_PLUGIN.is_file():
        missing(f"{DICOMWEB_PLUGIN} not installed (apt-get install orthanc-dicomweb)")
    target = make_target(OrthancSpec(dicomweb=True), ClientSpec())
    try:
        target.start(tmp_path_factory.mktemp("orthanc-web"))
        yield target
    finally:
        target.stop()


@pytest.fixture(scope="module")
def pool() -> StudyPool:
    return StudyPool.prepare(load_profile("tiny"), 2, seed=3, progress=False)


def http(url: str, data: bytes | None = None, headers: dict | None = None):
    """An HTTP answer as it is, 4xx included."""
    try:
        return urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=30)
    except urllib.error.HTTPError as answer:
        return answer


def test_a_stow_body_is_stored_whole_and_comes_back_equal_through_the_streamed_wado_parser(orthanc_web, pool):
    study = pool.next_study()
    uid = study[0].changes["StudyInstanceUID"]
    body, content_type = stow_body(study)
    answer = http(f"{orthanc_web.peer.dicomweb_url}/studies/{uid}", bytes(body), {"Content-Type": content_type})
    stored, failures = stow_outcome(json.loads(answer.read()))
    assert answer.status == 200 and failures == [] and stored == {i.sop_instance_uid for i in study}

    answer = http(f"{orthanc_web.peer.dicomweb_url}/studies/{uid}", headers={"Accept": WADO_ACCEPT})
    chunks = iter(lambda: answer.read(4096), b"")  # small reads: parts cross many chunk boundaries
    received = {f.sop_instance_uid: f for f in read_instances(chunks, answer.headers["Content-Type"], True)}
    assert set(received) == stored
    for instance in study:
        arrived = received[instance.sop_instance_uid]
        assert (arrived.digest, arrived.bytes, arrived.frames) == (instance.digest(), instance.size, instance.frames)
        assert arrived.study_instance_uid == uid


def test_a_stow_body_read_as_the_socket_reads_it_is_every_part_whole(pool):
    study = pool.next_study()
    body, content_type = stow_body(study)
    whole = bytes(body)
    assert len(body) == len(whole) > sum(i.size for i in study)
    pieces = list(iter(partial(body.read, 8192), b""))  # as a sendfile fallback asks: views of up to SEND_BLOCK
    assert b"".join(pieces) == whole and max(map(len, pieces)) <= body.SEND_BLOCK and body.read(8192) == b""
    boundary = content_type.rsplit("boundary=", 1)[1]
    assert whole.count(f"--{boundary}\r\n".encode()) == len(study) and whole.endswith(f"--{boundary}--\r\n".encode())


def test_a_broken_multipart_answer_is_an_error_not_instances():
    with pytest.raises(ValueError, match="not a multipart answer"):
        read_instances([b"{}"], "application/json", False)
    with pytest.raises(ValueError, match="not a DICOM Part 10 file"):
        read_instances(
            [b"--b\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n--b--\r\n"],
            "multipart/related; boundary=b",
            False,
        )


# A stow user posts one study holding an instance of another study, in a process of its own: locust (gevent)
# must patch a process before its threads start, which a pytest process is past.
STRAY_INSTANCE = """
import sys
from pathlib import Path

from bench.load import engine  # noqa: F401 (locust first: it patches the process for gevent)
from locust.env import Environment

from bench.dicom.peer import Peer
from bench.load.roles import user_classes
from bench.load.users import LoadContext
from bench.results.samples import RunRecords
from bench.scenario.file import Scenario
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile

url, folder = sys.argv[1], Path(sys.argv[2])
scenario = Scenario.model_validate(
    {"target": {"kind": "remote", "port": 104, "dicomweb_url": url}, "studies": {"profile": "tiny"}}
    | {"load": {"duration": 1}, "users": {"stow": {"count": 1}}}
)
pool = StudyPool.prepare(load_profile("tiny"), 2, seed=3, progress=False)
records = RunRecords(folder)
env = Environment(user_classes=user_classes(scenario, LoadContext(scenario, pool, Peer("127.0.0.1", 104, "X", url))))
env.events.request.add_listener(records.on_request)
user = env.user_classes[0](env)
user.on_start()
good, stray = pool.next_study()[0], pool.next_study()[0]
user.study = [good, stray]  # posted to the first one's /studies/{study}
user.store_next_instances()
records.close()
print(good.sop_instance_uid, stray.sop_instance_uid)
"""


def test_an_instance_of_another_study_shows_its_ps3_18_failure_reason_in_the_error_column(orthanc_web, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", STRAY_INSTANCE, orthanc_web.peer.dicomweb_url, tmp_path],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    good, stray = done.stdout.split()
    row = pd.read_csv(tmp_path / "samples.csv").iloc[0]
    assert row["operation"] == "STOW-RS" and row["user_type"] == "stow"
    assert row["status"] in (202, 409)  # stored in part, or refused whole
    assert re.search(rf"FailureReason 0x[0-9A-F]{{4}} \(1 instance, e.g. {stray}\)", row["error"]), row["error"]
    sent = pd.read_csv(tmp_path / "sent.csv") if (tmp_path / "sent.csv").exists() else pd.DataFrame()
    assert list(sent.get("sop_instance_uid", [])) == ([good] if row["status"] == 202 else [])
    assert row["instances"] == len(sent)


@pytest.fixture(scope="module")
def mixed_run(orthanc_web, tmp_path_factory) -> Path:
    """A short run with DIMSE and DICOMweb users against the module's Orthanc (a remote target with a DICOMweb
    base URL: Orthanc outlives the run, for `verify`), and its report."""
    folder = tmp_path_factory.mktemp("mixed")
    peer = orthanc_web.peer
    remote = f'[target]\nkind = "remote"\nport = {peer.port}\ndicomweb_url = "{peer.dicomweb_url}"\n'
    (folder / "mixed.toml").write_text('name = "mixed"\n' + remote + MIXED)
    result = pacsbench("run", folder / "mixed.toml", "--results", folder / "results", "--no-progress")
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    report = pacsbench("report", run_dir)
    assert report.returncode == 0, report.stderr
    return run_dir


def test_stow_qido_and_wado_users_against_orthanc_count_and_fail_nothing(mixed_run):
    samples = pd.read_csv(mixed_run / "samples.csv", dtype={"error": str}).fillna({"error": ""})
    for operation in DICOMWEB_OPERATIONS:
        rows = samples[samples["operation"] == operation]
        assert len(rows) and (rows["status"] == 200).all() and (rows["error"] == "").all(), operation
    assert samples.loc[samples["operation"] == "STOW-RS", "instances"].sum() > 0
    assert samples.loc[samples["operation"] == "WADO-RS", "frames"].sum() > 0
    assert (samples.loc[samples["operation"].isin(["C-STORE", "C-GET", "C-FIND"]), "error"] == "").all()
    run = json.loads((mixed_run / "run.json").read_text())
    assert run["target"]["kind"] == "remote" and run["target"]["dicomweb_url"].endswith("/dicom-web")


def test_the_orthanc_target_loads_its_dicomweb_plugin_and_says_so(orthanc_web):
    described = orthanc_web.describe()
    assert described["plugins"] == ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]
    assert described["dicomweb_url"] == orthanc_web.peer.dicomweb_url and described["fsync"] is True


def test_instances_retrieved_by_wado_rs_hash_equal_to_what_was_sent(mixed_run):
    sent = pd.read_csv(mixed_run / "sent.csv")
    retrieved = pd.read_csv(mixed_run / "retrieved.csv")
    by_wado = retrieved[retrieved["operation"] == "WADO-RS"].merge(sent, on="sop_instance_uid", suffixes=("", "_sent"))
    assert len(by_wado) > 0  # (the archive also holds the studies the tests above stored: not in sent.csv)
    assert (by_wado["digest"] == by_wado["digest_sent"]).all() and (by_wado["bytes"] == by_wado["bytes_sent"]).all()


def test_verify_by_wado_rs_finds_every_acknowledged_instance_unchanged(mixed_run):
    result = pacsbench("verify", mixed_run, "--protocol", "dicomweb")
    assert result.returncode == 0, result.stdout + result.stderr
    verified = json.loads((mixed_run / "verify.json").read_text())
    sent = pd.read_csv(mixed_run / "sent.csv")
    assert verified["ok"] and verified["protocol"] == "WADO-RS" and verified["instances"] == len(sent) > 0
    assert verified["returned"] >= len(sent) and verified["retrieved_checked"] > 0


def test_the_report_puts_dimse_and_dicomweb_side_by_side_in_html_and_markdown(mixed_run):
    html = (mixed_run / "report.html").read_text()
    markdown = (mixed_run / "summary.md").read_text()
    html_titles = [unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", html)]
    markdown_titles = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert html_titles == markdown_titles and "DIMSE and DICOMweb side by side" in html_titles
    section = markdown.split("## DIMSE and DICOMweb side by side")[1].split("\n## ")[0]
    for operation in ("C-STORE", "STOW-RS", "C-GET", "WADO-RS", "QIDO-RS"):
        assert f"| {operation} |" in section
    assert "latency CDFs per protocol" in html
    summary = json.loads((mixed_run / "summary.json").read_text())
    assert summary["estimates"]["stow_instances_per_s"]["value"] > 0


def test_a_target_without_a_dicomweb_side_is_one_line_exit_2(tmp_path):
    (tmp_path / "s.toml").write_text(TARGET.replace("dicomweb = true\n", "") + MIXED)  # no name: the file's
    result = pacsbench("run", tmp_path / "s.toml", "--results", tmp_path / "results", "--no-progress")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "[users.stow], [users.qido], [users.wado]: the orthanc target serves DICOMweb only with dicomweb = true" in (
        result.stderr
    )
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


# Wado users of each `retrieve` (and one whose pool frames are tampered with, whose frames must then be errors) read a
# study a stow user stored, in a process of their own (see STRAY_INSTANCE).
VIEWER = """
import json
import sys
import urllib.request
from pathlib import Path

from bench.load import engine  # noqa: F401 (locust first: it patches the process for gevent)
from locust.env import Environment

from bench.dicom.peer import Peer
from bench.load.dicomweb import DICOM_JSON, PoolFrames
from bench.load.roles import user_classes
from bench.load.users import LoadContext
from bench.results.samples import RunRecords
from bench.scenario.file import Scenario
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile

url, folder = sys.argv[1], Path(sys.argv[2])
pool = StudyPool.prepare(load_profile("tiny"), 2, seed=3, progress=False)
records = RunRecords(folder)


def user(users):
    target = {"kind": "remote", "port": 104, "dicomweb_url": url}
    scenario = Scenario.model_validate(
        {"target": target, "studies": {"profile": "tiny"}, "load": {"duration": 1}, "users": users}
    )
    context = LoadContext(scenario, {"tiny": pool}, Peer("127.0.0.1", 104, "X", url))
    env = Environment(user_classes=user_classes(scenario, context))
    env.events.request.add_listener(records.on_request)
    made = env.user_classes[0](env)
    made.on_start()
    return made


stow = user({"stow": {"count": 1}})
stow.study = pool.next_study()
stored = stow.study[0].changes["StudyInstanceUID"]
stow.store_next_instances()
with urllib.request.urlopen(urllib.request.Request(url + "/studies", headers={"Accept": DICOM_JSON})) as answer:
    held = {item["0020000D"]["Value"][0] for item in json.loads(answer.read())}
for retrieve, extra in [("instances", {}), ("metadata", {}), ("frames", {"frames_per_request": 5}), ("tampered", {})]:
    spec = {"count": 1, "check_digests": True, "retrieve": "frames" if retrieve == "tampered" else retrieve}
    wado = user({"wado": spec | extra})
    if retrieve == "tampered":  # every pool frame's digest changed: each frame must then fail its check
        frames = type(wado).pool_frames = PoolFrames([pool])
        for templates in frames.templates.values():
            for template in templates:
                frames._digests[id(template.pixel_chunks[1].obj)] = [b"tampered"] * template.frames
    wado.read = held - {stored}  # the others were read: it reads the study just stored, whose frames are the pool's
    wado.read_next_study()
records.close()
"""


def run_viewers(url: str, folder: Path) -> pd.DataFrame:
    done = subprocess.run(
        [sys.executable, "-c", VIEWER, url, folder], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return pd.read_csv(folder / "samples.csv", dtype={"error": str}).fillna({"error": ""})


def check_viewers(samples: pd.DataFrame) -> None:
    """Instances, metadata and frames 5 at a time all arrived whole; a tampered pool makes the first frames an error."""
    by = {op: samples[samples["operation"] == op] for op in samples["operation"].unique()}
    assert (by["STOW-RS"]["status"] == 200).all() and (by["STOW-RS"]["error"] == "").all()
    assert len(by["WADO-RS"]) == 1 and by["WADO-RS"]["error"].iloc[0] == ""
    metadata = by["WADO-RS metadata"]
    assert len(metadata) == 3 and (metadata["status"] == 200).all() and (metadata["error"] == "").all()
    assert (metadata["instances"] > 0).all() and (metadata["frames"] == 0).all() and (metadata["bytes"] > 0).all()
    frames = by["WADO-RS frames"]
    good, tampered = frames[frames["error"] == ""], frames[frames["error"] != ""]
    assert len(good) and (good["status"] == 200).all() and (good["frames"] <= 5).all()
    # the viewer read every frame of every instance of the study just stored, in batches of 5 (tiny: 8-12 frames)
    stored = by["STOW-RS"]["study_instance_uid"].iloc[0]
    assert (frames["study_instance_uid"] == stored).all() and (metadata["study_instance_uid"] == stored).all()
    per_instance = good.groupby("sop_instance_uid")["frames"]
    assert per_instance.ngroups == by["STOW-RS"]["instances"].iloc[0]
    assert per_instance.sum().between(8, 12).all() and (per_instance.count() == -(-per_instance.sum() // 5)).all()
    assert (good["bytes"] == good["frames"] * 256 * 256 * 2).all()  # the tiny profile: 256x256, 16 bits allocated
    assert len(tampered) == 1 and "is not the pool's pixel data" in tampered["error"].iloc[0]
    assert tampered["status"].iloc[0] == 200 and tampered["frames"].iloc[0] == 1


@pytest.mark.slow  # users driven in a process of their own
def test_a_viewer_reads_metadata_then_frames_checked_against_the_pool_from_our_archive(tmp_path):
    archive, url = start_web_archive(tmp_path / "archive")
    try:
        check_viewers(run_viewers(url, tmp_path))
    finally:
        archive.stop()


def test_a_viewer_reads_metadata_then_frames_checked_against_the_pool_from_orthanc(orthanc_web, tmp_path):
    check_viewers(run_viewers(orthanc_web.peer.dicomweb_url, tmp_path))


def test_frames_of_an_encapsulated_instance_are_its_fragments_and_one_changed_byte_is_found(tmp_path):
    """RLE Lossless frames from our archive (transfer-syntax=*) against the pool's fragments, and batches of 4."""
    pool = StudyPool.prepare(load_profile("tiny"), 1, seed=3, progress=False, transfer_syntax="rle")
    archive, url = start_web_archive(tmp_path / "archive")
    try:
        study = pool.next_study()
        uid = study[0].changes["StudyInstanceUID"]
        body, content_type = stow_body(study)
        assert http(f"{url}/studies/{uid}", bytes(body), {"Content-Type": content_type}).status == 200
        found = json.loads(http(f"{url}/studies/{uid}/metadata", headers={"Accept": DICOM_JSON}).read())
        instances, checked = described_instances(found), PoolFrames([pool])
        assert sorted(i.frames for i in instances) == sorted(i.frames for i in study)
        for instance in instances:
            for numbers in frame_batches(instance.frames, 4):
                answer = http(url + instance.frames_path(numbers), headers={"Accept": FRAMES_ACCEPT})
                frames = read_frames(iter(partial(answer.read, 4096), b""), answer.headers["Content-Type"])
                assert len(frames) == len(numbers) and checked.mismatch(instance, numbers, frames) == ""
                changed = [frames[0][:-1] + bytes([frames[0][-1] ^ 1]), *frames[1:]]
                assert f"frame {numbers[0]} of {instance.sop_instance_uid}" in checked.mismatch(
                    instance, numbers, changed
                )
    finally:
        archive.stop()


def test_which_targets_have_a_dicomweb_side():
    def scenario(target: dict) -> Scenario:
        return Scenario.model_validate(
            {"target": target, "studies": {"profile": "tiny"}, "load": {"duration": 1}, "users": {"wado": {"count": 1}}}
        )

    assert "no dicomweb_url" in dicomweb_gap(scenario({"kind": "remote", "port": 104}))
    assert dicomweb_gap(scenario({"kind": "remote", "port": 104, "dicomweb_url": "http://pacs/dicom-web"})) is None
    assert "no DICOMweb side" in dicomweb_gap(scenario({"kind": "dcmtk", "fsync": False}))
    native = scenario({"kind": "native"})
    assert dicomweb_gap(native) is None and with_dicomweb(native).target.dicomweb is True
    target = make_target(with_dicomweb(native).target, ClientSpec())
    target.dicomweb_port, target.ready_file = 8080, Path("ready.json")
    command = target.command(Path("data"), 0)
    assert command[command.index("--dicomweb-port") + 1] == "8080"
