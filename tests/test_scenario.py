import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import UserError
from bench.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
VALID = """
[target]
kind = "native"
[studies]
profile = "tiny"
[load]
users = 2
duration = 3
"""


def _write(tmp_path, text) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "scenarios").glob("*.toml")))
def test_shipped_scenarios_are_valid(name):
    scenario = load_scenario(ROOT / "scenarios" / name)
    assert scenario.load.users >= 1 and scenario.load.duration > 0


def test_defaults_fill_the_optional_parts(tmp_path):
    scenario = load_scenario(_write(tmp_path, VALID))
    assert scenario.name == "s" and scenario.client.calling_ae == "PACSBENCH-SCU"
    assert scenario.target.fsync is True and scenario.studies.pool >= 1


@pytest.mark.parametrize(
    "text, expected",
    [
        (VALID.replace("users = 2", "usres = 2"), "[load] usres: unknown key (did you mean 'users'?)"),
        (VALID.replace("duration = 3\n", ""), "[load] duration: required key is missing"),
        (VALID.replace('kind = "native"', 'kind = "nativ"'), "[target] kind: Input should be 'native', 'kvm', 'tcg', 'orthanc', 'dcmtk' or 'remote'"),
        (VALID.replace("users = 2", "users = 'many'"), "[load] users: Input should be a valid integer"),
        (VALID.replace("[studies]\nprofile = \"tiny\"\n", ""), "required table [studies] is missing"),
        (VALID.replace('kind = "native"', 'kind = "remote"'), "[target]"),
        ("[target\nkind=1", "not valid TOML"),
    ],
)
def test_bad_scenarios_name_file_table_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_scenario(path)
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_scenario_file():
    with pytest.raises(UserError, match="scenario file not found: nowhere.toml"):
        load_scenario(Path("nowhere.toml"))


def test_cli_bad_scenario_is_one_line_exit_2_no_traceback(tmp_path):
    path = _write(tmp_path, VALID.replace("users = 2", "usres = 2"))
    result = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"pacsbench: error: {path}: [load] usres: unknown key (did you mean 'users'?)"]
    assert not (tmp_path / "r").exists()
