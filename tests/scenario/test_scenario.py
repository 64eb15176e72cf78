"""Scenario files: every shipped one parses, defaults fill the rest, bad input is one line naming file, table, key."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from bench.common.errors import UserError
from bench.scenario.file import Scenario, archive_in_namespace, load_scenario
from bench.scenario.targets import TARGET_MODELS

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
def test_shipped_scenarios_are_valid_and_their_dumps_read_back(name):
    scenario = load_scenario(ROOT / "scenarios" / name)
    assert scenario.load.users >= 1 and scenario.load.duration > 0
    assert isinstance(scenario.target, TARGET_MODELS[scenario.target.kind])
    # run.json keeps the full dump, a load worker gets the settings the file set: both parse to the same scenario.
    for dump in (scenario.model_dump(), scenario.model_dump(exclude_unset=True)):
        assert Scenario.model_validate(json.loads(json.dumps(dump))) == scenario


def test_defaults_fill_the_optional_parts(tmp_path):
    scenario = load_scenario(_write(tmp_path, VALID))
    assert scenario.name == "s" and scenario.client.calling_ae == "PACSBENCH-SCU"
    assert scenario.target.fsync is True and scenario.studies.pool >= 1


@pytest.mark.parametrize(
    "text, expected",
    [
        (VALID.replace("users = 2", "usres = 2"), "[load] usres: unknown key (did you mean 'users'?)"),
        (VALID.replace("duration = 3\n", ""), "[load]: duration: required key is missing"),
        (
            VALID.replace('kind = "native"', 'kind = "nativ"'),
            "[target] kind: unknown kind 'nativ' "
            "(did you mean 'native'? known: native, kvm, tcg, orthanc, dcmtk, virtualbox, remote, esxi)",
        ),
        (VALID.replace('kind = "native"', 'host = "127.0.0.1"'), "[target] kind: required key is missing"),
        (
            VALID.replace('kind = "native"', 'kind = "native"\ncpuz = 4'),
            "[target] cpuz: unknown key (did you mean 'cpus'?)",
        ),
        (
            VALID.replace('kind = "native"', 'kind = "native"\ncapacity = "lots"'),
            "[target] capacity: not a size: 'lots'",
        ),
        (
            VALID + '[targets.big]\nkind = "tcg"\ncapacity = 5\n',
            "[targets.big] capacity: unknown key for kind 'tcg' (only for native)",
        ),
        (VALID + '[targets.big]\nkind = "vmware"\n', "[targets.big] kind: unknown kind 'vmware' (known: native,"),
        (VALID.replace("users = 2", "users = 'many'"), "[load] users: Input should be a valid integer"),
        (VALID.replace('[studies]\nprofile = "tiny"\n', ""), "required table [studies] is missing"),
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
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pacsbench: error: {path}: [load] usres: unknown key (did you mean 'users'?)"
    ]
    assert not (tmp_path / "r").exists()


USERS = VALID.replace("users = 2\n", "")


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            USERS + "[users.radiologist]\ncount = 1\n",
            "[users]: unknown user type 'radiologist' "
            "(known: modality, modalities, workstation, query, echo, stow, qido, wado)",
        ),
        (USERS + "[users.workstaton]\ncount = 1\n", "unknown user type 'workstaton' (did you mean 'workstation'?"),
        (
            USERS + "[users.modality]\ncount = 1\nstudies_per_hour = 5\ninstances_per_s = 1\n",
            "[users.modality]: give studies_per_hour or instances_per_s, not both",
        ),
        (
            USERS + '[users.workstation]\ncount = 1\nretrieve = "copy"\n',
            "[users.workstation] retrieve: Input should be 'move' or 'get'",
        ),
        (
            USERS + '[users.wado]\ncount = 1\nretrieve = "frame"\n',
            "[users.wado] retrieve: Input should be 'instances', 'frames' or 'metadata' (got 'frame')",
        ),
        (
            USERS + '[users.wado]\ncount = 1\nretrieve = "frames"\nframes_per_request = 0\n',
            "[users.wado] frames_per_request: Input should be greater than or equal to 1",
        ),
        (
            USERS + "[users.wado]\ncount = 1\nframes_per_request = 4\n",
            '[users.wado]: frames_per_request needs retrieve = "frames" (retrieve is "instances")',
        ),
        (USERS + "[users.modality]\nweight = 2\n", "[load] users: required when [users.modality] has no count"),
        (VALID + "[users.modality]\ncount = 3\n", "[load] users (2) is less than the user counts (3)"),
        (
            USERS.replace("duration = 3", 'shape = "steps"\nsteps = [1, 2]') + "[users.modality]\n",
            "[load]: shape 'steps' needs steps (users per step, each >= 1) and step_seconds",
        ),
        (
            VALID.replace('profile = "tiny"', 'profile = "tiny"\ntransfer_syntax = "jpeg"'),
            "[studies] transfer_syntax: Input should be",
        ),
    ],
)
def test_bad_user_mixes_and_shapes_are_one_line(tmp_path, text, expected):
    with pytest.raises(UserError) as err:
        load_scenario(_write(tmp_path, text))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_user_counts_weights_and_step_shapes(tmp_path):
    mixed = load_scenario(_write(tmp_path, USERS + "[users.modality]\ncount = 1\n[users.workstation]\ncount = 20\n"))
    assert mixed.load.users == 21 and mixed.users.workstation.retrieve == "move"
    steps = load_scenario(
        _write(
            tmp_path,
            USERS.replace("duration = 3", 'shape = "steps"\nsteps = [1, 4, 2]\nstep_seconds = 5')
            + "[users.modality]\n",
        )
    )
    assert steps.load.duration == 15 and steps.load.users == 4 and steps.users.modality.count is None
    legacy = load_scenario(_write(tmp_path, VALID))
    assert list(legacy.users.groups()) == ["modality"] and legacy.users.modality.studies_per_hour is None


def test_cli_unknown_user_type_is_one_line_exit_2(tmp_path):
    path = _write(tmp_path, USERS + "[users.radiologist]\ncount = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "unknown user type 'radiologist'" in result.stderr and not (tmp_path / "r").exists()


def test_guests_take_every_fault_and_network_down(tmp_path):
    faults = "".join(
        f'[[faults]]\nat = {at}\naction = "{action}"\nduration = 0.5\n'
        for at, action in enumerate(["kill", "stop", "pause", "restart", "network-down"])
    )
    text = VALID.replace('kind = "native"', 'kind = "tcg"').replace("duration = 3", "duration = 9")
    scenario = load_scenario(_write(tmp_path, text + faults))
    assert [f.action for f in scenario.faults] == ["kill", "stop", "pause", "restart", "network-down"]


def test_only_a_native_archive_with_a_network_down_fault_runs_in_a_namespace_of_its_own(tmp_path):
    down = '[[faults]]\nat = 1\naction = "network-down"\nduration = 0.5\n'
    kill = '[[faults]]\nat = 1\naction = "kill"\nduration = 0.5\n'
    assert archive_in_namespace(load_scenario(_write(tmp_path, VALID + down)))
    assert not archive_in_namespace(load_scenario(_write(tmp_path, VALID + kill)))  # loopback, as ever
    assert not archive_in_namespace(load_scenario(_write(tmp_path, VALID)))
    guest = VALID.replace('kind = "native"', 'kind = "tcg"')
    assert not archive_in_namespace(load_scenario(_write(tmp_path, guest + down)))  # its own NIC takes the fault
