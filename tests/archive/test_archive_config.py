"""The archive's settings and what it says about itself: a bad config is one line, /metrics and /status."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import ROOT
from helpers.archive import client, start_archive
from pydicom import dcmread


@pytest.mark.parametrize(
    "text, expected",
    [
        ("prot = 104\n", "unknown key 'prot'"),
        ('duplicates = "sometimes"\n', "duplicates: expected one of overwrite, reject, keep-first"),
        ('[[tiers]]\nname = "a"\npath = "x"\ncapacity = "lots"\n', "[tiers.0] capacity: not a size"),
        ("workers = -1\n", "workers: expected a whole number"),
        ("[dicomweb]\ntimeout = 0\n", "[dicomweb] timeout: expected seconds above 0"),
        ('[dicomweb]\nmax_request = "huge"\n', "[dicomweb] max_request: not a size"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path, text, expected):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "server_under_test", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 2 and expected in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("where", ["option", "file"])
def test_an_artim_timeout_of_zero_is_one_line_and_exit_2(tmp_path, where):
    config = tmp_path / "artim.toml"
    config.write_text("artim_timeout = 0.0\n" if where == "file" else "")
    extra = ["--artim-timeout", "0"] if where == "option" else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "server_under_test",
            "--config",
            str(config),
            "--port",
            "0",
            "--data",
            str(tmp_path / "data"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # argparse prints its usage above the error line, as for every other option
    assert result.returncode == 2 and "above 0" in result.stderr.splitlines()[-1], result.stderr
    assert where == "option" or result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "data").exists()


def test_metrics_and_status_describe_the_archive(tmp_path, tiny_studies):
    archive = start_archive(tmp_path / "archive", "--metrics-port", "0")
    try:
        assoc, _ = client(archive)
        assert assoc.send_c_store(dcmread(sorted(tiny_studies.rglob("*.dcm"))[0])).Status == 0
        assoc.release()
        time.sleep(0.3)
        metrics = urllib.request.urlopen(f"{archive.metrics_url}/metrics", timeout=10).read().decode()
        status = json.loads(urllib.request.urlopen(f"{archive.metrics_url}/status", timeout=10).read())
    finally:
        archive.stop()
    assert 'pacsbench_archive_operations_total{operation="C-STORE",status="success"} 1.0' in metrics
    assert 'pacsbench_archive_associations_total{result="accepted"}' in metrics
    assert "pacsbench_archive_operation_seconds_bucket" in metrics
    assert 'pacsbench_archive_tier_used_bytes{tier="tier1"}' in metrics
    assert status["settings"]["fsync"] is True and status["index"]["instances"] == 1
    assert status["environment"]["hypervisor"] and status["environment"]["vcpus"] >= 1
    assert status["environment"]["storage"][0]["fs_type"]


def test_dicomweb_port_option_over_the_file(tmp_path):
    """--dicomweb-port sets the port and keeps the file's bounds; 0 turns DICOMweb off; by default it is off."""
    from server_under_test.server import parse_args

    config = tmp_path / "archive.toml"
    config.write_text('[dicomweb]\nport = 8042\nmax_request = "2 MB"\ntimeout = 5\n')
    settings, _ = parse_args(["--config", str(config), "--dicomweb-port", "9042"], "test")
    assert (settings.dicomweb.port, settings.dicomweb.max_request, settings.dicomweb.timeout) == (9042, 2_000_000, 5.0)
    assert parse_args(["--config", str(config), "--dicomweb-port", "0"], "test")[0].dicomweb.port == 0
    assert parse_args([], "test")[0].dicomweb is None
