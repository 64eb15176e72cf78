"""Target settings: one model per kind, told apart by `kind`; another kind's setting is an unknown key, in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common.errors import UserError
from bench.runs.matrix import resolve_target
from bench.scenario.file import Scenario, load_scenario
from bench.scenario.targets import KINDS, TARGET_MODELS, TargetBase, target_spec

BASE = {"studies": {"profile": "tiny"}, "load": {"users": 1, "duration": 1}}
TABLES = '[studies]\nprofile = "tiny"\n[load]\nusers = 1\nduration = 1\n'
# A value for every setting only some kinds take, none of them a default (a default is no setting).
SETTINGS = {
    "fsync": False, "cpus": 4, "memory_mib": 4096, "keep_data": True, "capacity": "4 GB", "at_capacity": "recycle",
    "network": "tap", "data_disk_format": "qcow2", "data_disk_cache": "unsafe", "data_disk_gib": 16,
    "boot_timeout": 60.0, "metrics_url": "http://archive:8080", "hypervisor": "esxi",
    "api_port": 8443, "metrics_port": 8081, "user": "pacsbench", "password_env": "ESXI_PASSWORD",
    "ca_file": "esxi-ca.pem", "thumbprint": "AB" * 20, "insecure": True, "datacenter": "DC0", "datastore": "ds1",
    "resource_pool": "pool", "cluster": "cluster", "esxi_host": "esx01", "ova": "pacsbench.ova", "keep": True,
    "dicomweb": True, "dicomweb_url": "http://archive:8042/dicom-web", "dicomweb_port": 9042,
}  # fmt: skip
# What a kind cannot be without: a remote archive's port; an esxi host, user and datastore.
REQUIRED = {"remote": {"port": 104}, "esxi": {"host": "esxi.example.org", "user": "root", "datastore": "datastore1"}}
# Settings of one kind that exclude each other: left out of the all-at-once test (the refusal has its own case).
EXCLUSIVE = {"esxi": ("insecure",)}  # insecure = true with ca_file or thumbprint
# run.json's [target] as the previous release wrote it: every kind's settings, at their defaults.
OLD_DUMP = {
    "label": None, "host": "127.0.0.1", "port": None, "ae_title": "PACSBENCH", "fsync": True, "keep_data": False,
    "max_pdu": 0, "metrics_url": None, "hypervisor": None, "cpus": 2, "memory_mib": 2048, "network": "user",
    "data_disk_format": "raw", "data_disk_cache": "none", "data_disk_gib": 8, "boot_timeout": 300.0,
    "capacity": None, "at_capacity": "stop",
}  # fmt: skip


def takers(key: str) -> list[str]:
    return [kind for kind, model in TARGET_MODELS.items() if key in model.model_fields]


def problem(tmp_path: Path, target: dict) -> str:
    """The one-line error a scenario with this [target] gets (it names the file)."""
    path = tmp_path / "s.toml"
    path.write_text("[target]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in target.items()) + TABLES)
    with pytest.raises(UserError) as err:
        load_scenario(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_the_settings_table_covers_every_setting_of_a_kind():
    shared = set(TargetBase.model_fields)
    assert set(SETTINGS) == {name for model in TARGET_MODELS.values() for name in model.model_fields} - shared
    assert all(1 <= len(takers(key)) < len(KINDS) for key in SETTINGS)  # each one some kinds', none everyone's


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_rejects_the_settings_of_the_others_naming_who_takes_them(kind, tmp_path):
    address = REQUIRED.get(kind, {})
    for key, value in SETTINGS.items():
        if key not in TARGET_MODELS[kind].model_fields:
            message = problem(tmp_path, {"kind": kind, **address, key: value})
            assert message == f"[target] {key}: unknown key for kind '{kind}' (only for {', '.join(takers(key))})"


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_takes_its_own_settings_and_its_dumps_read_back(kind):
    own = {
        key: value
        for key, value in SETTINGS.items()
        if key in TARGET_MODELS[kind].model_fields and key not in EXCLUSIVE.get(kind, ())
    }
    address = REQUIRED.get(kind, {})
    spec = target_spec({"kind": kind, **address, **own})
    assert type(spec) is TARGET_MODELS[kind] and spec.kind == kind
    assert all(getattr(spec, key) == (4_000_000_000 if key == "capacity" else value) for key, value in own.items())
    for dump in (
        spec.model_dump(),
        spec.model_dump(exclude_unset=True),
        type(spec)(**address).model_dump(exclude_unset=True),
    ):
        again = target_spec(json.loads(json.dumps(dump)))
        assert type(again) is type(spec) and again.kind == kind  # a dump always names its kind
    assert target_spec(spec.model_dump()) == spec


@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind != "esxi"])  # esxi is newer than that release
def test_a_dump_of_the_previous_release_still_reads(kind):
    old = {**OLD_DUMP, "kind": kind, **({"port": 104} if kind == "remote" else {})}
    spec = target_spec(old)
    assert type(spec) is TARGET_MODELS[kind] and spec.ae_title == "PACSBENCH"
    assert set(spec.model_dump()) == set(TARGET_MODELS[kind].model_fields)  # another kind's defaults: dropped
    if kind != "remote":
        assert spec.cpus == 2
    # A value that is not the default is a setting: still refused where it does not belong.
    foreign = "metrics_url" if kind != "remote" else "network"
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        target_spec({**old, foreign: SETTINGS[foreign]})


def test_an_unknown_kind_is_one_line_naming_the_known_ones(tmp_path):
    assert problem(tmp_path, {"kind": "hyperv"}) == f"[target] kind: unknown kind 'hyperv' (known: {', '.join(KINDS)})"
    assert problem(tmp_path, {"kind": "tgc"}).startswith("[target] kind: unknown kind 'tgc' (did you mean 'tcg'? ")
    assert problem(tmp_path, {"host": "archive"}) == "[target] kind: required key is missing"


@pytest.mark.parametrize("target,message", [
    ({"kind": "remote", "port": 104, "vcpus": 4}, "[target] vcpus: unknown key for kind 'remote' (only for native, "
     "kvm, tcg, orthanc, dcmtk, virtualbox, esxi)"),
    ({"kind": "esxi", **REQUIRED["esxi"], "insecure": True, "ca_file": "ca.pem"}, "[target]: 'insecure = true' turns "
     "verification off: give it, or 'ca_file'/'thumbprint', not both"),
    ({"kind": "esxi", **REQUIRED["esxi"], "thumbprint": "AB:CD"}, "[target] thumbprint: "
     "give the SHA-1 (40 hex digits) or SHA-256 (64) thumbprint, colons allowed (got 'AB:CD')"),
    ({"kind": "virtualbox", "ae_title": "VBOX"}, "[target]: a virtualbox guest takes no settings: it answers as "
     "PACSBENCH with 1048576-byte PDUs on a port forwarded to 127.0.0.1 (leave 'ae_title', 'max_pdu' and 'host' out)"),
    ({"kind": "virtualbox", "max_pdu": 16384}, "[target]: a virtualbox guest takes no settings: it answers as "
     "PACSBENCH with 1048576-byte PDUs on a port forwarded to 127.0.0.1 (leave 'ae_title', 'max_pdu' and 'host' out)"),
    ({"kind": "native", "cpuz": 4}, "[target] cpuz: unknown key (did you mean 'cpus'?)"),
    ({"kind": "tcg", "network": "tap", "port": 4000}, "[target]: 'port' is the forwarded host port of user-mode "
     "networking; a tap guest listens on 11112"),
    ({"kind": "remote"}, "[target]: a remote target needs 'port' (and usually 'host' and 'ae_title')"),
    ({"kind": "tcg", "network": "bridge"}, "[target] network: Input should be 'user' or 'tap' (got 'bridge')"),
    ({"kind": "orthanc", "max_pdu": 1 << 20}, "[target]: 'max_pdu' 1048576: orthanc takes 4096 to 131072 bytes (0: "
     "its largest)"),
    ({"kind": "dcmtk", "max_pdu": 1024}, "[target]: 'max_pdu' 1024: dcmtk takes 4096 to 131072 bytes (0: its largest)"),
])  # fmt: skip
def test_a_setting_that_does_not_fit_the_kind_is_one_line(tmp_path, target, message):
    assert problem(tmp_path, target) == message


def test_installed_archives_get_their_largest_pdu_for_unlimited():
    assert target_spec({"kind": "orthanc"}).pdu_size == 131072
    assert target_spec({"kind": "dcmtk", "max_pdu": 16384}).pdu_size == 16384
    assert target_spec({"kind": "native", "max_pdu": 1 << 20}).max_pdu == 1 << 20  # the reference archive: any size
    assert target_spec({"kind": "virtualbox", "max_pdu": 1 << 20}).max_pdu == 1 << 20  # its guest's own size


def test_every_started_kind_takes_a_budget_and_vcpus_still_reads_as_cpus():
    for kind in ("native", "orthanc", "dcmtk", "kvm", "tcg", "virtualbox"):
        spec = target_spec({"kind": kind, "cpus": 1, "memory_mib": 1024})
        assert (spec.cpus, spec.memory_mib) == (1, 1024)
    assert target_spec({"kind": "tcg", "vcpus": 3}).cpus == 3  # scenarios written before `cpus`
    native = target_spec({"kind": "native"})
    assert (native.cpus, native.memory_mib) == (2, 2048)


def test_faults_and_backups_follow_the_kind(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[target]\nkind = "dcmtk"\n' + TABLES + '[[faults]]\nat = 0.5\naction = "kill"\n')
    with pytest.raises(UserError, match=r"\[\[faults\]\]: the dcmtk target cannot take faults \(only native, kvm, tcg"):
        load_scenario(path)
    path.write_text('[target]\nkind = "tcg"\n' + TABLES + '[[faults]]\nat = 0.5\naction = "backup"\n')
    with pytest.raises(UserError, match='action = "backup": the tcg target cannot be backed up by pacsbench'):
        load_scenario(path)


def test_matrix_names_are_tables_or_kinds_on_the_scenarios_target():
    scenario = Scenario(target={"kind": "native", "fsync": False, "max_pdu": 16384, "keep_data": True},
                        targets={"big": {"kind": "tcg", "vcpus": 4}}, **BASE)  # fmt: skip
    tap = resolve_target(scenario, "tcg-tap")
    assert (tap.kind, tap.network, tap.label, tap.fsync, tap.max_pdu) == ("tcg", "tap", "tcg-tap", False, 16384)
    assert resolve_target(scenario, "big").model_dump(include={"kind", "cpus", "label"}) == {
        "kind": "tcg", "cpus": 4, "label": "big"
    }  # fmt: skip
    assert resolve_target(scenario, "dcmtk").keep_data is True  # kept: it applies to dcmtk
    assert not hasattr(resolve_target(scenario, "kvm"), "keep_data")  # dropped: not kvm's
    for bad, message in (
        ("vmware", "unknown target 'vmware'"),
        ("native-tap", "only kvm and tcg"),
        ("remote", "a remote target needs its address"),
    ):
        with pytest.raises(UserError, match=message):
            resolve_target(scenario, bad)


def test_a_matrix_target_whose_settings_do_not_fit_is_one_line():
    scenario = Scenario(target={"kind": "native", "max_pdu": 1 << 20}, **BASE)
    with pytest.raises(UserError) as err:
        resolve_target(scenario, "orthanc")
    assert str(err.value) == "target 'orthanc': 'max_pdu' 1048576: orthanc takes 4096 to 131072 bytes (0: its largest)"
