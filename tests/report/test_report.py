import json
import re
import subprocess
import sys
from html import unescape

import pytest
from synthetic import write_run

from bench.analysis.aggregate import Settings, Warmup, load_samples, measure, summarize, timeline
from bench.common.errors import UserError
from bench.report.page import build_comparison_report, build_report
from bench.results.samples import Sample, SampleWriter

NO_WARMUP = Settings(Warmup(), 1.0)


def _regular_run(folder, rate_per_s=20.0, seconds=10, failures=0, scenario_name="synthetic", warnings=0):
    """Samples at an exact rate: 1 MB, 4 frames per instance, latency 10-19 ms; the first
    `failures` fail (A700), the next `warnings` are stored with a coercion warning (B000)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = SampleWriter(folder / "samples.csv")
    t0 = 1_700_000_000.0
    for i in range(int(rate_per_s * seconds)):
        failed = i < failures
        status = 0xA700 if failed else 0xB000 if i < failures + warnings else 0
        writer.write(
            Sample(
                start=t0 + i / rate_per_s,
                worker="w",
                user=f"u{i % 2}",
                user_type="modality",
                association=f"a{i % 2}",
                operation="C-STORE",
                sop_instance_uid=f"1.2.{i}",
                study_instance_uid="1.2",
                instances=1,
                frames=4,
                bytes=1_000_000,
                latency_ms=10.0 + (i % 10),
                status=status,
                error="C-STORE status 0xA700" if failed else "",
            )
        )
    writer.close()
    (folder / "run.json").write_text(json.dumps({"run_id": folder.name, "scenario": {"name": scenario_name}}))
    return folder


def test_rates_match_a_known_synthetic_load(tmp_path):
    run = _regular_run(tmp_path / "r", rate_per_s=20.0, seconds=10)
    s = summarize(load_samples(run), NO_WARMUP)
    # 200 instances between the first send (t=0) and the last response (t=9.95+0.019).
    window = 199 / 20.0 + 0.019
    assert s["window_seconds"] == pytest.approx(window, abs=1e-3)
    assert s["instances_per_s"] == pytest.approx(200 / window, rel=1e-3)
    assert s["frames_per_s"] == pytest.approx(4 * 200 / window, rel=1e-3)
    assert s["mb_per_s"] == pytest.approx(200 / window, rel=1e-3)
    assert s["latency_ms"]["p50"] == pytest.approx(14.5) and s["latency_ms"]["max"] == pytest.approx(19.0)
    assert s["failures"] == 0 and s["users"] == 2


def test_warmup_rule_drops_the_stated_share_or_seconds(tmp_path):
    samples = load_samples(_regular_run(tmp_path / "r", rate_per_s=10.0, seconds=10))
    span = samples["end"].max() - samples["start"].min()
    by_share = measure(samples, Settings(Warmup.parse("10%")))
    assert by_share.begin - by_share.run_start == pytest.approx(0.1 * span)
    by_seconds = summarize(samples, Settings(Warmup.parse("5s")))
    assert by_seconds["warmup_seconds"] == pytest.approx(5.0)
    # responses at t = i/10 + 10..19 ms: those ending before t=5 s are i <= 49
    assert by_seconds["warmup_requests_dropped"] == 50 and by_seconds["instances"] == 50
    assert "10%" in summarize(samples)["settings"]["warmup"]  # the default is stated
    with pytest.raises(UserError, match="--warmup"):
        Warmup.parse("ten")


def test_failures_are_counted_by_dicom_status_and_not_throughput(tmp_path):
    run = _regular_run(tmp_path / "r", rate_per_s=10.0, seconds=10, failures=30)
    s = summarize(load_samples(run), NO_WARMUP)
    assert s["instances"] == 70 and s["failures"] == 30
    assert s["failures_by_error"] == {"C-STORE status 0xA700": 30}
    assert s["errors_by_status"] == [
        {"operation": "C-STORE", "status": "0xA700", "count": 30, "example": "C-STORE status 0xA700"}
    ]
    assert s["operations"]["C-STORE"]["failed"] == 30


def test_warning_statuses_count_as_stored(tmp_path):
    """B000 (coercion of data elements) means the instance was stored: throughput counts it."""
    run = _regular_run(tmp_path / "r", rate_per_s=10.0, seconds=10, failures=10, warnings=20)
    s = summarize(load_samples(run), NO_WARMUP)
    assert s["instances"] == 90 and s["failures"] == 10
    assert s["operations"]["C-STORE"]["failed"] == 10 and s["user_types"]["modality"]["instances"] == 90
    assert [e["status"] for e in s["errors_by_status"]] == ["0xA700"]


def test_breakdowns_per_operation_and_user_type(tmp_path):
    run = write_run(tmp_path / "r", rate=50, find_rate=5, seconds=10)
    s = summarize(load_samples(run), NO_WARMUP)
    assert set(s["operations"]) == {"C-STORE", "C-FIND"} and set(s["user_types"]) == {"modality", "query"}
    assert s["operations"]["C-FIND"]["instances"] == 0 and s["operations"]["C-FIND"]["latency_ms"]["p95"] > 0
    assert s["metrics"]["ingest_instances_per_s"] == pytest.approx(50, rel=0.15)
    assert s["metrics"]["query_requests_per_s"] == pytest.approx(5, rel=0.5)
    assert s["metrics"]["c_find_p95_ms"] > s["metrics"]["c_find_p50_ms"]


def test_timeline_bins_per_window(tmp_path):
    run = _regular_run(tmp_path / "r", rate_per_s=5.0, seconds=4)
    bins = timeline(load_samples(run))
    assert list(bins["instances"]) == [5, 5, 5, 5]
    assert list(bins["mb"]) == [5.0, 5.0, 5.0, 5.0]
    assert list(timeline(load_samples(run), 2.0)["instances"]) == [5.0, 5.0]
    windows = summarize(load_samples(run), Settings(Warmup.parse("1s")))["windows"]
    assert [(w["start_s"], w["warmup"], w["frames_per_s"]) for w in windows] == [
        (0, True, 20),
        (1, False, 20),
        (2, False, 20),
        (3, False, 20),
    ]


def test_report_is_self_contained_and_escapes_what_users_wrote(tmp_path):
    script = "<script>alert(1)</script>"
    run = write_run(
        tmp_path / "r",
        rate=20,
        seconds=6,
        scenario=script,
        failures=3,
        error_text=f"PatientName {script}",
        run_extra={"run_id": "<b>x</b>"},
    )
    html = build_report(run).read_text()
    assert script not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "PatientName &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    summary = json.loads((run / "summary.json").read_text())
    estimate = summary["estimates"]["ingest_instances_per_s"]
    assert summary["instances"] > 0 and estimate["value"] > 0
    assert estimate["ci_low"] is None and estimate["evidence_kind"] == "too short" and "too short" in html
    assert script not in (run / "summary.md").read_text()


def test_report_states_the_calibration_or_its_absence(tmp_path):
    plain = write_run(tmp_path / "plain", rate=50, seconds=6)
    build_report(plain)
    assert "no calibration recorded" in (plain / "report.html").read_text()
    calibrated = write_run(
        tmp_path / "cal",
        rate=50,
        seconds=6,
        run_extra={"calibration": {"ceiling_instances_per_s": 55.0, "ceiling_mb_per_s": 500.0}},
    )
    build_report(calibrated)
    summary = json.loads((calibrated / "summary.json").read_text())
    assert summary["calibration"]["client_bound"] is True  # 50/s is above 80% of 55/s
    assert "CLIENT-BOUND" in (calibrated / "summary.md").read_text()


def test_a_viewers_frames_and_metadata_stand_beside_c_get_and_dicomweb_figures_meet_their_own_ceilings(tmp_path):
    """C-GET 10/s (40 frames/s), WADO-RS frames 20 requests/s of 2 frames, metadata 2/s, STOW-RS 4 studies/s (20
    instances/s) against a STOW-RS ceiling of 22 instances/s: client-bound, though C-STORE is far below its own."""
    calibration = {
        "ceiling_instances_per_s": 500.0,
        "ceiling_mb_per_s": 5000.0,
        "stow_ceiling_instances_per_s": 22.0,
        "stow_ceiling_mb_per_s": 1000.0,
    }
    run = write_run(
        tmp_path / "r",
        rate=5,
        seconds=20,
        get_rate=10,
        web_rates={"WADO-RS frames": 20, "WADO-RS metadata": 2, "STOW-RS": 4},
        run_extra={"calibration": calibration},
    )
    build_report(run)
    summary = json.loads((run / "summary.json").read_text())
    frames_rate = summary["estimates"]["wado_frames_frames_per_s"]["value"]
    assert 30 < frames_rate < 50 and 1 < summary["estimates"]["wado_metadata_requests_per_s"]["value"] < 3
    assert summary["calibration"]["client_bound"] is False
    (stow,) = summary["dicomweb_calibration"]
    assert (
        stow["operation"] == "STOW-RS" and stow["client_bound"] is True and stow["note"].startswith("STOW-RS: CLIENT")
    )
    assert summary["bound_by"]["limit"] == "client"
    markdown = (run / "summary.md").read_text()
    section = markdown.split("## DIMSE and DICOMweb side by side")[1].split("\n## ")[0]
    rows = {cells[3]: cells for line in section.splitlines() if len(cells := line.split(" | ")) > 8}
    frames_row, metadata_row = rows["WADO-RS frames"], rows["WADO-RS metadata"]
    assert frames_row[2] == "DICOMweb" and frames_row[4].endswith("frames/s") and metadata_row[4].endswith("requests/s")
    retrieve_frames = summary["estimates"]["retrieve_frames_per_s"]["value"]
    assert float(frames_row[-1].strip(" |")) == pytest.approx(frames_rate / retrieve_frames, abs=0.01)
    assert metadata_row[-1].strip(" |") == "no DIMSE counterpart"
    assert "Harness ceilings: STOW-RS: CLIENT-BOUND" in section
    assert "latency CDFs per protocol" in (run / "report.html").read_text()


def test_zero_samples_and_missing_folder_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    SampleWriter(empty / "samples.csv").close()
    with pytest.raises(UserError, match="zero samples"):
        load_samples(empty)
    with pytest.raises(UserError, match="run folder not found"):
        load_samples(tmp_path / "nope")
    for folder, message in ((empty, "zero samples"), (tmp_path / "nope", "run folder not found")):
        result = subprocess.run(
            [sys.executable, "-m", "bench.cli", "report", str(folder)], capture_output=True, text=True
        )
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr


def _html_sections(text: str) -> tuple[list[str], list[str]]:
    """The <h2> section titles and the <summary> part titles of report.html, unescaped."""

    def titles(pattern: str) -> list[str]:
        return [unescape(t) for t in re.findall(pattern, text)]

    return titles(r"<h2>(.*?)</h2>"), titles(r"<summary>(.*?)</summary>")


def _markdown_sections(text: str) -> tuple[list[str], list[str]]:
    """The ## section titles and the ### part titles of summary.md, unescaped."""

    def titles(prefix: str) -> list[str]:
        return [unescape(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]

    return titles("## "), titles("### ")


def test_html_and_markdown_carry_the_same_sections_for_a_run_and_a_comparison(tmp_path):
    fault = {"action": "kill", "at": 2.0, "duration": 0.0, "happened": False, "error": "no archive to kill"}
    extra = {"faults": [fault], "capacity": {"at_capacity": "recycle", "recycled_studies": 3}}
    native = write_run(tmp_path / "native", rate=20, seconds=6, failures=2, run_extra=extra)
    vm = write_run(
        tmp_path / "vm",
        rate=15,
        seconds=6,
        seed=2,
        find_rate=3,
        run_extra={"target": {"kind": "remote", "label": "vm|1", "hypervisor": "kvm"}},
    )
    single = build_report(native).parent
    comparison = build_comparison_report([native, vm], tmp_path / "cmp").parent
    for folder, runs in (
        (single, ["native, run native, repetition 1"]),
        (comparison, ["native, run native, repetition 1", "vm|1, run vm, repetition 1"]),
    ):
        sections, parts = _html_sections((folder / "report.html").read_text())
        markdown_sections, markdown_parts = _markdown_sections((folder / "summary.md").read_text())
        assert sections == markdown_sections
        assert [p.replace("|", "/") for p in parts] == markdown_parts  # Markdown text loses its pipes
        assert {
            "Figures per target",
            "Figures",
            "Faults",
            "Errors by DICOM status (whole runs)",
            "Published claims",
            "Runs",
            "Environment",
            "How the figures were computed",
        } <= set(sections)
        assert parts == runs
    assert "The run in figures" in _html_sections((single / "report.html").read_text())[0]
    assert "Against the baseline (native)" in _markdown_sections((comparison / "summary.md").read_text())[0]
    # the run notes stand under the answer in both
    for name in ("report.html", "summary.md"):
        assert "The archive recycled 3 studies" in (single / name).read_text()


def test_a_loss_found_by_a_later_verification_shows_in_every_output(tmp_path):
    counts = {"target": "native", "studies": 4, "retrieved_different": 0}
    verify = counts | {"ok": True, "instances": 120, "returned": 120, "missing": 0, "different": 0}
    later = counts | {"ok": False, "instances": 120, "returned": 118, "missing": 2, "different": 1}
    run = write_run(tmp_path / "r", rate=20, seconds=6, run_extra={"verify": verify, "verify_later": [later]})
    build_report(run)
    lost = "VERIFICATION FAILED: 2 lost, 1 changed, 0 retrieved changed, of 120 acknowledged"
    assert json.loads((run / "summary.json").read_text())["integrity"].startswith(lost)
    for name in ("report.html", "summary.md"):
        text = (run / name).read_text()
        assert f"Integrity: {lost}" in text  # the run's own part, not only the headline
        assert "the first: verified: all 120 acknowledged instances returned byte-identical" in text
