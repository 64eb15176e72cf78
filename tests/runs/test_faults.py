"""Fault runs against the real reference archive: kill, restart, pause and network-down under load, through the
real CLI."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT

# The figures of a fault printed for the issue note (-s).
FAULT_FIGURES = (
    "recovery_seconds",
    "recovery_by",
    "failed_during_outage",
    "failed_by_status",
    "acknowledged_before",
    "lost",
)
CLIENT_TIMEOUT = 1.5  # short, so a paused archive's requests fail within it rather than wait


def steady_scenario(duration: float, rest: str) -> str:
    """The native archive under a paced modality (20 instances/s) and an echo every 0.25 s for `duration`
    seconds, tiny studies; then `rest` (client settings, more users, the faults)."""
    return (
        f"""
[target]
kind = "native"
[studies]
profile = "tiny"
pool = 2
[load]
duration = {duration}
[users.modality]
count = 1
instances_per_s = 20
[users.echo]
count = 1
interval = 0.25
"""
        + rest
    )


SCENARIO = steady_scenario(
    16,
    f"""\
[client]
timeout = {CLIENT_TIMEOUT}
[[faults]]
at = 3
action = "kill"
duration = 2
[[faults]]
at = 8
action = "restart"
[[faults]]
at = 11
action = "pause"
duration = 3
""",
)

VALID = """
[target]
kind = "native"
[studies]
profile = "tiny"
[load]
users = 1
duration = 10
"""


def pacsbench(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    scenario = folder / "faults.toml"
    scenario.write_text(SCENARIO)
    result = pacsbench("run", scenario, "--results", folder / "results", "--no-progress")
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    run = json.loads((run_dir / "run.json").read_text())
    samples = pd.read_csv(run_dir / "samples.csv", keep_default_na=False)
    samples["end"] = samples["start"] + samples["latency_ms"] / 1000.0
    return run_dir, run, samples, result.stderr


def _fault(run: dict, action: str) -> dict:
    return next(f for f in run["faults"] if f["action"] == action)


@pytest.mark.slow
def test_a_killed_and_a_restarted_archive_recover_and_lose_nothing(fault_run):
    _, run, _, stderr = fault_run
    assert run["status"] == "completed"
    for action in ("kill", "restart"):
        fault = _fault(run, action)
        assert fault["happened"] and fault["recovery_seconds"] > 0 and fault["recovery_by"] == "C-STORE"
        assert fault["startup_seconds"] > 0 and fault["first_echo_seconds"] > 0
        assert fault["acknowledged_before"] > 0 and fault["lost"] == 0 and fault["changed"] == 0
        assert f"fault {action} at" in stderr
    kill = _fault(run, "kill")
    assert kill["exit_code"] == -9
    assert kill["recovery_seconds"] >= kill["duration"]  # nothing is stored before the archive is back
    assert kill["failed_during_outage"] > 0 and "no response" in kill["failed_by_status"]


@pytest.mark.slow
def test_samples_show_failures_during_the_kill_outage_and_successes_after(fault_run):
    _, run, samples, _ = fault_run
    kill = _fault(run, "kill")
    t, recovered = kill["unix_time"], kill["unix_time"] + kill["recovery_seconds"]
    first_answer = t + min(kill["first_echo_seconds"], kill["first_store_seconds"])
    during = samples[(samples["end"] >= t) & (samples["end"] < first_answer - 0.001)]
    # After the recovery and before the next fault (the restart): the later outages fail stores of their own.
    next_fault = min(f["unix_time"] for f in run["faults"] if f["happened"] and f["unix_time"] > t)
    after = samples[(samples["start"] >= recovered) & (samples["end"] < next_fault)]
    assert len(during) > 0 and (during["status"] != 0).all()
    stores_after = after[after["operation"] == "C-STORE"]
    assert len(stores_after) > 0 and (stores_after["status"] == 0).mean() > 0.9
    # Users reconnected by themselves: associations after the kill are new ones.
    before = set(samples[samples["end"] < t]["association"])
    assert set(after["association"]) - before


@pytest.mark.slow
def test_a_paused_archive_makes_requests_fail_within_the_client_timeout_not_hang(fault_run):
    _, run, samples, _ = fault_run
    pause = _fault(run, "pause")
    assert pause["startup_seconds"] is None and pause["lost"] == 0
    assert pause["failed_during_outage"] > 0
    assert pause["recovery_seconds"] >= pause["duration"] - 0.1
    assert samples["latency_ms"].max() < (CLIENT_TIMEOUT + 1.0) * 1000


@pytest.mark.slow
def test_the_report_has_the_fault_table_and_summary_json_the_faults(fault_run):
    run_dir, run, _, _ = fault_run
    result = pacsbench("report", run_dir)
    assert result.returncode == 0, result.stderr
    html = (run_dir / "report.html").read_text()
    assert "<h2>Faults</h2>" in html and "Dashed black lines: faults injected" in html
    markdown = (run_dir / "summary.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith(f"| {run_dir.name} | ")]
    assert [row.split(" | ")[1] for row in rows] == ["kill", "restart", "pause"]
    assert json.loads((run_dir / "summary.json").read_text())["faults"] == run["faults"]


@pytest.mark.parametrize(
    "faults, kind, expected",
    [
        (
            'at = 3\naction = "explode"',
            "native",
            "[faults.0] action: Input should be 'kill', 'stop', 'pause', 'restart', 'network-down' or 'backup'",
        ),
        ('at = 12\naction = "kill"', "native", "[[faults]] at = 12: beyond the load's duration (10 s)"),
        (
            'at = 3\naction = "kill"',
            "orthanc",
            "[[faults]]: the orthanc target cannot take faults (only native, kvm, tcg in this version)",
        ),
        (
            'at = 3\naction = "pause"\nduration = 5\n[[faults]]\nat = 6\naction = "kill"',
            "native",
            "[[faults]] at = 6: before the fault listed above it is over (8 s)",
        ),
        (
            'at = 3\naction = "kill"\nrecover = "restore"',
            "native",
            '[[faults]] at = 3: recover = "restore" needs a [[faults]] action = "backup" before it',
        ),
        ('at = 3\naction = "pause"\nrecover = "restore"', "native", 'recover = "restore" goes with kill or stop'),
    ],
)
def test_bad_faults_are_one_line_and_exit_2(tmp_path, faults, kind, expected):
    scenario = tmp_path / "s.toml"
    scenario.write_text(VALID.replace('"native"', f'"{kind}"') + f"[[faults]]\n{faults}\n")
    result = pacsbench("run", scenario, "--results", tmp_path / "r", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "r").exists()


RESTORE_SCENARIO = steady_scenario(
    14,
    """\
[[faults]]
at = 3
action = "backup"
[[faults]]
at = 7
action = "kill"
duration = 1
recover = "restore"
""",
)


@pytest.mark.slow
def test_a_kill_recovered_from_the_backup_keeps_what_the_backup_held_and_loses_the_recovery_point(tmp_path):
    scenario = tmp_path / "restore.toml"
    scenario.write_text(RESTORE_SCENARIO)
    result = pacsbench("run", scenario, "--results", tmp_path / "results", "--no-progress")
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    run = json.loads((run_dir / "run.json").read_text())
    backup, kill = _fault(run, "backup"), _fault(run, "kill")
    assert backup["happened"] and backup["backup"]["instances"] > 0
    assert kill["recover"] == "restore" and kill["restore"]["instances"] == backup["backup"]["instances"]
    # everything acknowledged before the backup came back; what came after it (up to the kill) is what a
    # restore from that backup costs: most of it is gone
    assert kill["acknowledged_before"] > 0 and kill["lost"] == 0 and kill["changed"] == 0
    assert 0 < kill["lost_after_backup"] <= kill["acknowledged_after_backup"]
    assert kill["recovery_seconds"] is not None and kill["recovery_by"] == "C-STORE"
    print(
        f"restore: {kill['restore']['summary']}; recovered in {kill['recovery_seconds']} s; "
        f"{kill['lost_after_backup']} of {kill['acknowledged_after_backup']} after the backup lost"
    )
    assert not list(run_dir.glob("backup-*/tier-*")), "the backup's copies are removed with the archive's storage"
    report = pacsbench("report", run_dir)
    assert report.returncode == 0, report.stderr
    markdown = (run_dir / "summary.md").read_text()
    assert "restored from the backup" in markdown and "(the recovery point)" in markdown
    recovery_claim = next(
        v
        for c in json.loads((run_dir / "summary.json").read_text())["claims"]
        for v in c["verdicts"]
        if v["metric"] == "restore_hours_per_year"
    )
    assert recovery_claim["measured"] is not None and recovery_claim["verdict"] in ("pass", "fail")


@pytest.mark.slow
def test_the_resource_series_follows_the_archive_started_again_after_the_faults(fault_run):
    run_dir, run, _, _ = fault_run
    restart = _fault(run, "restart")  # the last archive started: its processes are there to the end
    rows = pd.read_csv(run_dir / "server_metrics.csv")
    after = rows[rows["time"] > restart["unix_time"] + restart["recovery_seconds"] + 1]
    assert len(after) > 0 and (after["server_processes"] > 0).all() and after["server_cpu_percent"].max() > 0
    assert int((run_dir / "server.pid").read_text()) != run["resources"]["server_pid"]


NETWORK_DOWN_SCENARIO = steady_scenario(
    12,
    f"""\
[users.workstation]
count = 1
reading_images_per_s = 50
worklist_wait = 0.5
[client]
timeout = {CLIENT_TIMEOUT}
[[faults]]
at = 4
action = "network-down"
duration = 3
""",
)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30).stdout


@pytest.mark.slow
@pytest.mark.parametrize("processes", [[], ["--workers", "1"]], ids=["local", "one-worker"])
def test_a_native_network_down_cuts_the_archive_off_then_stores_and_moves_resume_and_nothing_is_left(
    root, tmp_path, processes
):
    """The archive in a namespace of its own: the veth's host end down, requests fail; up again, C-STORE and
    C-MOVE (the archive reaching the harness's Storage SCP over the veth) work; namespace and veth are gone."""
    scenario = tmp_path / "network-down.toml"
    scenario.write_text(NETWORK_DOWN_SCENARIO)
    result = pacsbench("run", scenario, "--results", tmp_path / "results", "--no-progress", *processes)
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    run = json.loads((run_dir / "run.json").read_text())
    down = _fault(run, "network-down")
    print(f"native network-down: {json.dumps({k: down[k] for k in FAULT_FIGURES})}")
    assert run["status"] == "completed" and down["happened"] and "error" not in down
    assert down["failed_during_outage"] > 0
    assert down["recovery_seconds"] is not None and down["recovery_by"] == "C-STORE"
    assert down["recovery_seconds"] >= down["duration"]  # nothing sent while the link was down is answered before
    assert down["acknowledged_before"] > 0 and down["lost"] == 0 and down["changed"] == 0
    target = run["target"]
    assert target["network"] == "veth into a namespace of its own (for network-down faults)"
    namespace = target["namespace"]
    assert target["host"] == namespace["namespace_address"] and run["resources"]["interface"] == namespace["host_veth"]
    assert target["destinations"] == {
        "PACSBENCH-SCP": f"{namespace['host_address']}:{run['harness_scp']['PACSBENCH-SCP'].rsplit(':', 1)[1]}"
    }
    samples = pd.read_csv(run_dir / "samples.csv", keep_default_na=False)
    moves_after = samples[
        (samples["operation"] == "C-MOVE") & (samples["start"] >= down["unix_time"] + down["recovery_seconds"])
    ]
    assert ((moves_after["status"] == 0) & (moves_after["instances"] > 0)).any(), "no C-MOVE delivered after the outage"
    assert namespace["namespace"] not in _ip("netns", "list").split()
    assert f"{namespace['host_veth']}@" not in _ip("-o", "link")


def _sigterm_network_down_run(tmp_path: Path, moment, delay: float = 0.0) -> tuple[dict, int]:
    """A 60-s network-down run (archive in a namespace, C-MOVEs into the harness's Storage SCP) sent SIGTERM `delay`
    seconds after `moment(results)` is true; it must end long before its load would, non-zero, with its namespace,
    veth and archive gone. run.json and the archive's pid."""
    scenario = tmp_path / "network-down.toml"
    scenario.write_text(NETWORK_DOWN_SCENARIO.replace("duration = 12", "duration = 60"))
    results = tmp_path / "results"
    run = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", scenario, "--results", results, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        while run.poll() is None and not moment(results):
            time.sleep(0.05)
        assert run.poll() is None, run.communicate()[1]
        time.sleep(delay)
        run.terminate()
        stderr = run.communicate(timeout=120)[1]
    finally:
        run.kill()
    record = json.loads(next(results.glob("*/run.json")).read_text())
    server_pid = int(next(results.glob("*/server.pid")).read_text())
    assert run.returncode != 0, stderr
    assert record["status"] == "interrupted", stderr
    assert (record.get("load_seconds") or 0) < 60, stderr  # the load did not run its course
    namespace = (record.get("target") or {}).get("namespace")
    assert namespace, record.get("target")
    assert namespace["namespace"] not in _ip("netns", "list").split()
    assert f"{namespace['host_veth']}@" not in _ip("-o", "link")
    assert not Path(f"/proc/{server_pid}").exists()
    return record, server_pid


def _target(results: Path) -> dict:
    record = next(results.glob("*/run.json"), None)
    try:
        return json.loads(record.read_text()).get("target") or {} if record else {}
    except json.JSONDecodeError:  # being replaced at this moment
        return {}


@pytest.mark.slow
def test_a_network_down_run_ended_by_sigterm_leaves_no_namespace_veth_or_archive(root, tmp_path):
    _sigterm_network_down_run(tmp_path, lambda results: _target(results).get("namespace"))


@pytest.mark.slow
def test_a_sigterm_during_the_load_ends_the_run_whatever_greenlet_it_lands_in(root, tmp_path):
    """Two seconds into the load the archive's C-MOVE sub-operations are being served by the harness's Storage SCP
    threads: a SIGTERM raised there as KeyboardInterrupt was swallowed by threading (the run went on and exited 0)."""
    record, _ = _sigterm_network_down_run(tmp_path, lambda results: _target(results).get("namespace"), delay=2.0)
    assert record["samples"] > 0 and record["started"]


@pytest.mark.slow
def test_a_sigterm_while_the_archive_starts_stops_it_and_removes_its_namespace(root, tmp_path):
    """SIGTERM between the archive's launch and its ready file: run.json keeps the namespace it had."""
    record, _ = _sigterm_network_down_run(tmp_path, lambda results: next(results.glob("*/server.pid"), None))
    assert record["target"]["exit_code"] is not None  # the archive was stopped, not left to its parent-death signal
