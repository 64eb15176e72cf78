"""Hypervisor targets with real guests: build (or reuse) the image, boot it under QEMU (KVM where it
really boots, else TCG), store and retrieve through it (DIMSE and DICOMweb), alternate it with native in a matrix,
export it and boot the OVA's disks on IDE + E1000 as VirtualBox would, and fail cleanly on bad input.

One image serves the whole session (built once, ~2-4 min; cached by its inputs under
$PACSBENCH_VM_CACHE or ~/.cache/pacsbench/vm). Each boot under TCG takes 1-2 minutes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT
from helpers.dicomfiles import dataset_bytes, encoded
from helpers.groups import GUESTS
from helpers.guests import shared_guest_image
from helpers.ova import check_ova
from helpers.tools import installed_kinds, require_kind, require_tool
from pydicom import Dataset, dcmread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
# A test that boots a guest (or builds the shared image: guest_image) joins GUESTS: one at a time.
NODELAY = {**os.environ, "TCP_NODELAY": "1"}
SCENARIO = """name = "vm-smoke"
[target]
kind = "{kind}"
{target}
[studies]
profile = "tiny"
pool = 2
seed = 1
[load]
users = 2
duration = {duration}
{users}"""
# One modality over DIMSE and one over DICOMweb (STOW-RS): the target serves DICOMweb because the run needs it.
BOTH_PROTOCOLS = "[users.modality]\ncount = 1\n[users.stow]\ncount = 1\n"


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (a run folder, a probe directory)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line and "pytest" not in line:
            found.append(line)
    return found


def pacsbench_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    return [name for name in out.split() if name.startswith(f"pacsbench-{os.getpid()}")]


def write_scenario(folder: Path, kind: str, target: str = "", duration: float = 5, users: str = "") -> Path:
    """Two users: modalities, or the `[users.*]` tables given."""
    path = folder / f"{kind}.toml"
    path.write_text(SCENARIO.format(kind=kind, target=target, duration=duration, users=users))
    return path


def pacsbench(*args: str, env: dict | None = None, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or os.environ.copy(),
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def guest_image(qemu, root):
    """The guest image, built once (or reused from the cache when its inputs did not change)."""
    require_tool("debootstrap", "debootstrap")
    return shared_guest_image()


@pytest.fixture(scope="session")
def accelerator(guest_image) -> str:
    """kvm where KVM really boots a kernel, else tcg (pure emulation) — decided by a bounded probe."""
    from bench.targets.vm.kvm import probe

    return "kvm" if probe(guest_image.kernel, "kvm").boots else "tcg"


def dicomweb_round_trip(url: str, path: Path) -> tuple[Dataset, dict, bytes]:
    """STOW-RS one instance with dicomweb-client (an independent client), QIDO-RS it, WADO-RS it back: the STOW
    answer, the QIDO-RS match and the data set bytes that came back."""
    from dicomweb_client.api import DICOMwebClient

    sent = dcmread(path)
    client = DICOMwebClient(url)
    stored = client.store_instances([sent])
    (found,) = client.search_for_instances(sent.StudyInstanceUID)
    back = client.retrieve_instance(sent.StudyInstanceUID, sent.SeriesInstanceUID, sent.SOPInstanceUID)
    return stored, found, encoded(back)


@GUESTS
def test_guest_stores_a_study_and_returns_it_bit_exact(dcmtk, guest_image, accelerator, tiny_studies, tmp_path):
    """By DIMSE (DCMTK's storescu and getscu) and by DICOMweb through the forwarded port (STOW-RS, QIDO-RS,
    WADO-RS of one instance of another study): both come back equal."""
    from bench.scenario.settings import ClientSpec
    from bench.scenario.targets import target_spec
    from bench.targets import make_target

    storescu = dcmtk.storescu
    getscu = dcmtk.getscu
    spec = target_spec({"kind": accelerator, "boot_timeout": 600, "dicomweb": True})
    target = make_target(spec, ClientSpec())
    files = sorted((tiny_studies / "study-0000").glob("*.dcm"))
    by_web = sorted((tiny_studies / "study-0001").glob("*.dcm"))[0]
    try:
        target.start(tmp_path)
        host, port = target.peer.host, str(target.peer.port)
        stored = subprocess.run(
            [storescu, "-aec", "PACSBENCH", host, port, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=300,
            env=NODELAY,
        )
        assert stored.returncode == 0, stored.stderr
        out = tmp_path / "got"
        out.mkdir()
        study = f"StudyInstanceUID={dcmread(files[0]).StudyInstanceUID}"
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", study]
        got = subprocess.run(
            [getscu, "-S", "+B", "-aec", "PACSBENCH", "-od", str(out), *keys, host, port],
            capture_output=True,
            text=True,
            timeout=300,
            env=NODELAY,
        )
        assert got.returncode == 0, got.stderr
        stored, found, back = dicomweb_round_trip(target.peer.dicomweb_url, by_web)
        described = target.describe()
    finally:
        target.stop()
    uid = dcmread(by_web).SOPInstanceUID
    assert [item.ReferencedSOPInstanceUID for item in stored.ReferencedSOPSequence] == [uid]
    assert "FailedSOPSequence" not in stored and found["00080018"]["Value"] == [uid]
    assert back == dataset_bytes(by_web)
    assert described["dicomweb_url"] == f"http://{described['network_settings']['dicomweb_forward']}/dicom-web"
    assert {dcmread(p).SOPInstanceUID: dataset_bytes(p) for p in out.iterdir()} == {
        dcmread(f).SOPInstanceUID: dataset_bytes(f) for f in files
    }
    assert described["hypervisor"] == {"kvm": "kvm", "tcg": "qemu"}[accelerator]
    assert described["environment"]["detected_by"] == "systemd-detect-virt"
    assert described["vcpus"] == 2 and described["boot_to_ready_seconds"] > 0
    assert described["network_settings"]["mode"] == "user" and described["disks"]["data"]["cache"] == "none"
    assert target.qemu.process.poll() is not None and not processes_mentioning(str(tmp_path))
    assert not (tmp_path / "data.raw").exists()


@GUESTS
def test_matrix_alternates_native_and_a_tap_guest(guest_image, accelerator, tmp_path):
    """native and a tap guest alternated, each storing by C-STORE and by STOW-RS (DICOMweb at the guest's address)."""
    scenario = write_scenario(tmp_path, "native", users=BOTH_PROTOCOLS)
    guest = f"{accelerator}-tap"
    result = pacsbench(
        "matrix",
        str(scenario),
        "--targets",
        f"native,{guest}",
        "--repeat",
        "1",
        "--results",
        str(tmp_path / "results"),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = Path(result.stdout.strip().splitlines()[-1])
    matrix = json.loads((folder / "matrix.json").read_text())
    # One repetition: a second guest boot would add ~80 s to the lane that bounds `make test`. The order's
    # rotation per repetition is checked end to end by test_esxi's matrix (two repetitions, no QEMU guest).
    assert [(r["target"], r["repetition"]) for r in matrix["runs"]] == [("native", 1), (guest, 1)]
    for entry in matrix["runs"]:
        run = json.loads((folder / entry["folder"] / "run.json").read_text())
        assert run["status"] == "completed" and run["samples"] > 0
        assert run["target"]["label"] == entry["target"]
        samples = pd.read_csv(folder / entry["folder"] / "samples.csv", dtype={"error": str}).fillna({"error": ""})
        for operation in ("C-STORE", "STOW-RS"):
            rows = samples[samples["operation"] == operation]
            assert len(rows) and (rows["error"] == "").all(), (entry, samples.tail().to_string())
        assert (samples.loc[samples["operation"] == "STOW-RS", "status"] == 200).all()
        if entry["target"] == guest:
            assert entry["hypervisor"] == run["target"]["hypervisor"] == {"kvm": "kvm", "tcg": "qemu"}[accelerator]
            network = run["target"]["network_settings"]
            assert network["mode"] == "tap" and network["vhost"] == "off" and "tap" in run["target"]["network"]
            assert run["target"]["dicomweb_url"] == f"http://{network['guest_address']}:8042/dicom-web"
            assert (folder / entry["folder"] / "console.log").stat().st_size > 0
            assert json.loads((folder / entry["folder"] / "server_status.json").read_text())["index"]["instances"] > 0
            assert "warnings" not in run
    compared = pacsbench("compare", str(folder), "--out", str(tmp_path / "cmp"))
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert guest in (tmp_path / "cmp" / "summary.md").read_text()
    assert not pacsbench_namespaces() and not processes_mentioning(str(folder))


@GUESTS
def test_asking_for_kvm_where_it_cannot_boot_says_why_in_one_line(guest_image, accelerator, tmp_path):
    if accelerator == "kvm":
        pytest.skip("KVM boots guests on this machine")
    result = pacsbench(
        "run", str(write_scenario(tmp_path, "kvm")), "--results", str(tmp_path), "--no-progress", timeout=600
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "KVM cannot boot a guest here" in lines[0] and "tcg can" in lines[0]
    assert not processes_mentioning("pacsbench-probe-") and not processes_mentioning(str(tmp_path))


@GUESTS
def test_the_exported_ova_boots_as_virtualbox_would_and_answers_with_its_defaults(guest_image, tmp_path):
    """Both disks of the OVA on IDE + E1000 (VirtualBox's defaults for it), through the firmware and the disk's own
    GRUB: no -kernel, no initrd, no kernel command line. The guest takes its address by DHCP from QEMU's user-mode
    network (VirtualBox NAT's twin), formats the blank data disk the deployer grew, and answers C-ECHO as
    PACSBENCH and QIDO-RS on the forwarded ports: its defaults."""
    from bench.dicom.peer import Peer
    from bench.dicom.readiness import wait_for_echo
    from bench.targets.vm.network import UserNetwork
    from bench.targets.vm.qemu import Machine, Qemu

    ova = tmp_path / "pacsbench.ova"
    assert pacsbench("vm", "export", "--format", "ova", "--out", str(ova)).returncode == 0
    assert check_ova(ova).vmware_os_type == "debian12_64Guest"  # what ESXi and VirtualBox read (tests/helpers/ova.py)
    with tarfile.open(ova) as tar:
        tar.extractall(tmp_path / "ova", filter="data")
    system, data = sorted((tmp_path / "ova").glob("*.vmdk"))
    qemu_img = require_tool("qemu-img", "qemu-utils")
    for disk in (system, data):
        check = subprocess.run([qemu_img, "check", str(disk)], capture_output=True, text=True, timeout=300)
        assert check.returncode == 0, check.stdout + check.stderr
    # What a deployer does before power-on: the data disk grown to the scenario's size (here 2 GiB).
    grown = tmp_path / "data.raw"
    subprocess.run([qemu_img, "convert", "-O", "raw", str(data), str(grown)], check=True, timeout=300)
    subprocess.run([qemu_img, "resize", "-f", "raw", str(grown), "2G"], check=True, capture_output=True, timeout=60)
    network = UserNetwork(dicomweb=True)  # with boot="disk" no kernel command line gives it 10.0.2.15: QEMU's DHCP does
    guest = Qemu(
        guest_image,
        Machine(system_bus="ide", nic="e1000", boot="disk", data_format="raw"),
        network,
        tmp_path,
        {},
        system_disk=(system, "vmdk"),
        data_disk=grown,
    )
    try:
        guest.start()
        assert "-kernel" not in guest.command and "-append" not in guest.command
        waited = wait_for_echo(
            Peer("127.0.0.1", network.host_port, "PACSBENCH"), "PACSBENCH-SCU", 900, alive=guest.alive
        )
        # DICOMweb is on in the defaults too (the virtualbox target forwards it): an empty archive's QIDO-RS
        with urllib.request.urlopen(f"{network.dicomweb_url}/studies", timeout=60) as answer:
            studies = (answer.status, answer.read())
    finally:
        guest.stop()
    assert waited > 0
    assert studies in ((204, b""), (200, b"[]"))
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert "e1000" in console and "settings from the defaults" in console
    # The blank data disk (whichever name the kernel gave it: IDE channels are probed in parallel) was formatted.
    assert re.search(r"formatted the blank disk /dev/sd[ab] as ext4 labelled pbdata", console)
    assert "mounted on /var/lib/pacsbench" in console
    assert not processes_mentioning(str(tmp_path))


@GUESTS
def test_a_guest_that_never_answers_is_stopped_with_one_line(guest_image, tmp_path):
    scenario = write_scenario(tmp_path, "tcg", 'network = "tap"\nboot_timeout = 3')
    result = pacsbench("run", str(scenario), "--results", str(tmp_path / "results"), "--no-progress", timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "did not answer C-ECHO within 3 s" in lines[0]
    assert not processes_mentioning(str(tmp_path)) and not pacsbench_namespaces()
    assert not list((tmp_path / "results").glob("*/data.raw"))


def test_missing_qemu_is_one_line(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no qemu-system-x86_64 anywhere on it
    result = pacsbench(
        "run", str(write_scenario(tmp_path, "tcg")), "--results", str(tmp_path), "--no-progress", env=env, timeout=300
    )
    assert (
        result.returncode == 2
        and result.stderr.strip()
        == "pacsbench: error: qemu-system-x86_64 not found: install it (Debian: apt-get install qemu-system-x86)"
    )


@GUESTS
def test_a_port_in_use_is_one_line(guest_image, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = pacsbench(
            "run",
            str(write_scenario(tmp_path, "tcg", f"port = {port}")),
            "--results",
            str(tmp_path),
            "--no-progress",
            timeout=300,
        )
    assert (
        result.returncode == 2
        and result.stderr.strip()
        == f"pacsbench: error: port 127.0.0.1:{port} is in use (Address already in use): choose another 'port'"
    )
    assert not processes_mentioning(str(tmp_path))


@pytest.mark.parametrize("kind", installed_kinds("orthanc", "dcmtk"))
def test_installed_archives_take_the_smoke_scenario(kind, tmp_path):
    require_kind(kind)
    result = pacsbench(
        "run", str(write_scenario(tmp_path, kind, duration=3)), "--results", str(tmp_path), "--no-progress", timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = Path(result.stdout.strip().splitlines()[-1])
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "completed" and run["samples"] > 0
    assert run["target"]["kind"] == kind and run["target"]["exit_code"] is not None
    assert run["target"]["environment_variables"] == {"TCP_NODELAY": "1"}
    assert not processes_mentioning(str(folder))
