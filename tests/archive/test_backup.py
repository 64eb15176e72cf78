"""`pacsbench archive backup|restore` against a real archive that keeps storing (DCMTK storescu)
and a restored archive answering DCMTK getscu: consistent, bit-exact, and strict about its input."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers.archive import start_archive
from helpers.dicomfiles import dataset_bytes
from helpers.tools import require_tool
from pydicom import dcmread
from pydicom.uid import generate_uid

from bench.cli.main import main as pacsbench

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
INSTANCES = 48  # enough that storing goes on while the backup runs
BATCH = 4  # instances per storescu association


def fresh_copies(tiny_studies: Path, out: Path, count: int, per_study: int = 6) -> list[Path]:
    """`count` copies of the tiny studies' instances, with new UIDs (a few studies, one series each)."""
    sources = sorted(tiny_studies.rglob("*.dcm"))
    out.mkdir(parents=True)
    paths = []
    for i in range(count):
        ds = dcmread(sources[i % len(sources)])
        if i % per_study == 0:
            study_uid, series_uid = generate_uid(), generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = out / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def storescu(port: int, ae_title: str, files: list[Path]) -> None:
    tool = require_tool("/usr/bin/storescu", "dcmtk")
    result = subprocess.run(
        [tool, "-aec", ae_title, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env=NODELAY,
    )
    assert result.returncode == 0, result.stderr


def instance_count(index: Path) -> int:
    with sqlite3.connect(index) as db:
        return db.execute("SELECT COUNT(*) FROM instance").fetchone()[0]


def rows(index: Path) -> dict[str, tuple[str, str, int]]:
    """SOP Instance UID -> (study UID, path, tier) of every instance an index names."""
    with sqlite3.connect(index) as db:
        return {
            sop: (study, path, tier)
            for sop, study, path, tier in db.execute(
                "SELECT i.sop_uid, s.study_uid, i.path, i.tier FROM instance i "
                "JOIN series r ON r.series_key = i.series_key JOIN study s ON s.study_key = r.study_key"
            )
        }


def wait_for_instances(index: Path, count: int, sender: threading.Thread) -> None:
    while sender.is_alive() and (not index.exists() or instance_count(index) < count):
        threading.Event().wait(0.05)


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory, tiny_studies):
    """A backup taken while DCMTK storescu keeps storing into the archive; the archive is stopped after."""
    work = tmp_path_factory.mktemp("backup")
    sent = {dcmread(p).SOPInstanceUID: p for p in fresh_copies(tiny_studies, work / "input", INSTANCES)}
    files = list(sent.values())
    archive = start_archive(work / "archive")
    errors: list[BaseException] = []

    def send() -> None:
        try:
            for start in range(0, len(files), BATCH):
                storescu(archive.port, archive.ae_title, files[start : start + BATCH])
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_for_instances(archive.index, 2 * BATCH, sender)
        code = pacsbench(["archive", "backup", "--data", str(archive.data), "--out", str(work / "backup")])
        storing_meanwhile = sender.is_alive()
        sender.join()
    finally:
        archive.stop()
    assert not errors, errors
    assert code == 0
    yield {
        "work": work,
        "archive": archive.data,
        "backup": work / "backup",
        "sent": sent,
        "storing_meanwhile": storing_meanwhile,
    }


def test_a_backup_taken_while_storing_has_every_file_its_index_names_bit_exact(backed_up):
    backup, archive = backed_up["backup"], backed_up["archive"]
    assert backed_up["storing_meanwhile"], "the sender finished before the backup did: nothing was tested"
    manifest = json.loads((backup / "manifest.json").read_text())
    in_backup = rows(backup / "index.sqlite")
    # Stores after the snapshot are in the archive, not in the backup; every row of the backup has its file.
    assert 0 < len(in_backup) < len(rows(archive / "index.sqlite")) == INSTANCES
    assert manifest["instances"] == len(in_backup) and manifest["dropped_after_snapshot"] == 0
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert manifest["bytes"] == sum(entry["size"] for entry in listed.values())
    for sop, (_study, path, tier) in in_backup.items():
        copy = backup / f"tier-{tier}" / Path(*Path(path).parts[-3:])
        assert copy.read_bytes() == Path(path).read_bytes()  # the archive's own file, byte for byte
        assert dataset_bytes(copy) == dataset_bytes(backed_up["sent"][sop])
        assert listed[copy.relative_to(backup).as_posix()]["size"] == copy.stat().st_size
    assert sorted(p.relative_to(backup).as_posix() for p in backup.rglob("*.dcm")) == sorted(listed)  # no others
    assert manifest["archive_version"] and manifest["snapshot_time"]


def test_a_restored_archive_serves_every_backed_up_instance_bit_exact(dcmtk, backed_up, tmp_path):
    restored = tmp_path / "restored"
    assert pacsbench(["archive", "restore", str(backed_up["backup"]), "--data", str(restored)]) == 0
    in_backup = rows(backed_up["backup"] / "index.sqlite")
    archive = start_archive(restored)
    try:
        out = tmp_path / "got"
        out.mkdir()
        for study in sorted({study for study, _, _ in in_backup.values()}):
            result = dcmtk.get_study(archive, study, out)
            assert result.returncode == 0, result.stderr
    finally:
        archive.stop()
    got = {dcmread(p).SOPInstanceUID: dataset_bytes(p) for p in out.iterdir()}
    assert got == {sop: dataset_bytes(backed_up["sent"][sop]) for sop in in_backup}


def test_restore_refuses_a_non_empty_folder_unless_forced(backed_up, tmp_path, capsys):
    target = tmp_path / "data"
    target.mkdir()
    (target / "something.txt").write_text("keep me")
    assert pacsbench(["archive", "restore", str(backed_up["backup"]), "--data", str(target)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"pacsbench archive: error: {target}: not empty (restore into an empty folder, or replace it "
        "with --force)\n"
    )
    assert (target / "something.txt").exists()
    assert pacsbench(["archive", "restore", str(backed_up["backup"]), "--data", str(target), "--force"]) == 0
    assert not (target / "something.txt").exists()
    assert set(rows(target / "index.sqlite")) == set(rows(backed_up["backup"] / "index.sqlite"))


def test_the_archive_restores_on_its_own_command_line_without_the_harness(backed_up, tmp_path):
    """`python -m server_under_test restore`, as inside a guest: the same restore as `pacsbench archive restore`."""
    restored = tmp_path / "restored"
    result = subprocess.run(
        [sys.executable, "-m", "server_under_test", "restore", str(backed_up["backup"]), "--data", str(restored)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith(f"restored {backed_up['backup']} into {restored}: ")
    assert result.stdout.count("\n") == 1
    assert set(rows(restored / "index.sqlite")) == set(rows(backed_up["backup"] / "index.sqlite"))
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "server_under_test",
            "backup",
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr == f"python -m server_under_test: error: {tmp_path}/nowhere: no such folder\n"


def test_a_corrupted_backup_file_fails_the_manifest_check(backed_up, tmp_path, capsys):
    backup = tmp_path / "backup"
    shutil.copytree(backed_up["backup"], backup)
    victim = next(backup.rglob("*.dcm"))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size, one pixel bit flipped
    victim.write_bytes(bytes(data))
    target = tmp_path / "data"
    assert pacsbench(["archive", "restore", str(backup), "--data", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest check failed" in err
    assert victim.relative_to(backup).as_posix() in err and "SHA-256" in err
    assert not target.exists()  # checked before anything was written


def test_a_moved_archive_is_backed_up_and_a_file_it_lost_is_named_with_exit_1(tmp_path, tiny_studies, capsys):
    """The data folder moved after storing (the index's paths name the old place), one file then deleted."""
    files = fresh_copies(tiny_studies, tmp_path / "input", 4)
    archive = start_archive(tmp_path / "archive")
    try:
        storescu(archive.port, archive.ae_title, files)
    finally:
        archive.stop()
    data = tmp_path / "moved"
    shutil.move(archive.data, data)
    lost = next((data / "storage").rglob("*.dcm"))
    lost.unlink()
    assert pacsbench(["archive", "backup", "--data", str(data), "--out", str(tmp_path / "b")]) == 1
    assert "1 left out because the archive has lost their files" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["missing_in_archive"] == [lost.stem] and manifest["instances"] == 3
    kept = set(rows(tmp_path / "b" / "index.sqlite"))
    assert kept == {dcmread(f).SOPInstanceUID for f in files} - {lost.stem}
    assert pacsbench(["archive", "restore", str(tmp_path / "b"), "--data", str(tmp_path / "r")]) == 0
    assert set(rows(tmp_path / "r" / "index.sqlite")) == kept


@pytest.mark.parametrize(
    "args, message",
    [
        (["backup", "--data", "{tmp}/nowhere", "--out", "{tmp}/b"], "{tmp}/nowhere: no such folder"),
        (["backup", "--data", "{tmp}", "--out", "{tmp}/b"], "{tmp}: not an archive data folder (no index.sqlite)"),
        (["restore", "{tmp}", "--data", "{tmp}/d"], "{tmp}: not an archive backup (no manifest.json)"),
        (["restore", "{tmp}/nowhere", "--data", "{tmp}/d"], "{tmp}/nowhere: no such folder"),
    ],
)
def test_bad_folders_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert pacsbench(["archive", *(a.format(tmp=tmp_path) for a in args)]) == 2
    assert capsys.readouterr().err == f"pacsbench archive: error: {message.format(tmp=tmp_path)}\n"


def tiers_config(path: Path, data: Path, fast: Path, slow: Path) -> Path:
    path.write_text(
        f'data = "{data}"\nmigration_interval = 3600\n'
        f'[[tiers]]\nname = "fast"\npath = "{fast}"\ncapacity = "1 KB"\n'
        f'[[tiers]]\nname = "slow"\npath = "{slow}"\n'
    )
    return path


def test_every_tier_is_backed_up_and_restored_to_the_configured_tiers_or_into_the_data_folder(tmp_path, tiny_studies):
    files = fresh_copies(tiny_studies, tmp_path / "input", 4)
    config = tiers_config(tmp_path / "archive.toml", tmp_path / "archive", tmp_path / "fast", tmp_path / "slow")
    archive = start_archive(tmp_path / "archive", "--config", str(config))
    try:
        storescu(archive.port, archive.ae_title, files)
    finally:
        archive.stop()
    stored = rows(archive.index)
    assert {tier for _, _, tier in stored.values()} == {0, 1}  # the first fills the 1 KB tier, the rest go on
    backup = tmp_path / "backup"
    assert (
        pacsbench(["archive", "backup", "--data", str(archive.data), "--out", str(backup), "--config", str(config)])
        == 0
    )
    assert [t["instances"] for t in json.loads((backup / "manifest.json").read_text())["tiers"]] == [1, 3]

    other = tiers_config(tmp_path / "other.toml", tmp_path / "data2", tmp_path / "fast2", tmp_path / "slow2")
    assert (
        pacsbench(["archive", "restore", str(backup), "--data", str(tmp_path / "data2"), "--config", str(other)]) == 0
    )
    flat = tmp_path / "data3"
    assert pacsbench(["archive", "restore", str(backup), "--data", str(flat)]) == 0
    for index, roots in (
        (tmp_path / "data2" / "index.sqlite", [tmp_path / "fast2", tmp_path / "slow2"]),
        (flat / "index.sqlite", [flat / "storage", flat / "storage"]),
    ):
        restored = rows(index)
        assert set(restored) == set(stored)
        for sop, (_study, path, tier) in restored.items():
            assert Path(path).parent.parent.parent == roots[stored[sop][2]]
            assert tier == (stored[sop][2] if roots[0] != roots[1] else 0)
            assert Path(path).read_bytes() == Path(stored[sop][1]).read_bytes()
        with sqlite3.connect(index) as db:
            usage = dict(db.execute("SELECT tier, files FROM tier_usage"))
        assert usage == ({0: 1, 1: 3} if roots[0] != roots[1] else {0: 4})
