"""Fixtures and hooks: the real tools a test needs (each marks the tests that use it), a private user state,
a study pool cache per session, tiny studies, a running archive.

What tests import lives in tests/helpers/, not here.
"""

from __future__ import annotations

import sys

import pytest
from helpers.archive import STARTED, start_archive, stop_archives_started_since
from helpers.browser import chromium_page
from helpers.groups import LANES
from helpers.tools import INSTALLED_KINDS, Dciodvfy, Dcmtk, missing, require_root, require_tool

from bench.common.processes import free_local_port

# A test that uses one of these fixtures (directly or through another fixture) gets the marker of
# the same name at collection, so `-m "not qemu"` selects before anything runs.
TOOL_FIXTURES = ("dcmtk", "dciodvfy", "orthanc", "qemu", "chromium", "root", "vcsim", "virtualbox")


@pytest.hookimpl(tryfirst=True)  # before pytest's -m selection and xdist's grouping read the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = getattr(item, "fixturenames", ())
        for name in TOOL_FIXTURES:
            if name in used:
                item.add_marker(name)
        if item.get_closest_marker("orthanc"):
            item.add_marker("slow")  # Orthanc takes seconds to start: not for the edit loop
        group_by_module_fixture(item)
    # The lanes of guests first, then the other groups (a stable sort): the lanes are the longest units
    # of work, so --dist loadgroup (with --no-loadscope-reorder: in this order, not by test count)
    # hands them to workers at once and the third worker takes the rest, instead of a guest lane
    # starting when the queue reaches tests/targets.
    items.sort(key=start_rank)


def group_by_module_fixture(item: pytest.Item) -> None:
    """A test that uses a module-scoped fixture (a run, an archive that several tests read) joins a group
    named after it: on one worker, the fixture is made once, not once on each worker that gets one of them."""
    if item.get_closest_marker("xdist_group"):
        return
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    shared = sorted(name for name, defs in definitions.items() if defs and defs[-1].scope in ("module", "class"))
    if shared:
        item.add_marker(pytest.mark.xdist_group(f"{item.nodeid.split('::')[0]}:{shared[0]}"))


def start_rank(item: pytest.Item) -> int:
    group = item.get_closest_marker("xdist_group")
    if group is None:
        return 2
    name = group.kwargs.get("name", group.args[0] if group.args else "")
    return 0 if name in LANES else 1


def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker under --dist loadgroup: refuse to run if the groups did not take (see pyproject.toml)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        message = (
            f"pytest-xdist did not put {lost[0]} in its xdist_group: grouped tests would run side by side "
            "(this pytest and pytest-xdist do not work together, see pyproject.toml)"
        )
        print(f"error: {message}", file=sys.__stderr__)  # a worker's exception reaches the terminal garbled
        raise pytest.UsageError(message)


@pytest.fixture(scope="session")
def dcmtk() -> Dcmtk:
    """DCMTK's tools by name (dcmtk.storescu); marks the test `dcmtk`."""
    require_tool("/usr/bin/echoscu", "dcmtk")
    return Dcmtk()


@pytest.fixture(scope="session")
def dciodvfy() -> Dciodvfy:
    """dicom3tools' IOD checker; marks the test `dciodvfy`."""
    return Dciodvfy()


@pytest.fixture(scope="session")
def orthanc() -> str:
    """Orthanc's program; marks the test `orthanc` (and `slow`)."""
    return require_tool(*INSTALLED_KINDS["orthanc"])


@pytest.fixture(scope="session")
def qemu() -> str:
    """qemu-system-x86_64; marks the test `qemu`."""
    return require_tool("qemu-system-x86_64", "qemu-system-x86")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium browser; marks the test `chromium`."""
    return require_tool("chromium", "chromium")


@pytest.fixture
def browser(chromium, tmp_path):
    """Headless Chromium on an empty page, driven through its DevTools protocol (helpers.browser)."""
    pytest.importorskip("websocket", reason="pip install websocket-client (in the test extra)")
    with chromium_page(chromium, tmp_path / "chromium-profile") as client:
        yield client


@pytest.fixture(scope="session")
def vcsim():
    """VMware's ESXi simulator, built once from tools/vcsim/main.go (tests/helpers/vcsim.py): its binary;
    marks the test `vcsim`. A test module starts its own simulator from it (helpers.vcsim.start)."""
    from helpers import vcsim as simulator

    if lacking := simulator.missing_tools():
        missing(f"the ESXi simulator cannot be built: no {lacking}")
    try:
        import pyVmomi  # noqa: F401
    except ImportError:
        missing("pyvmomi not installed (pip install -e '.[esxi]')")
    return simulator.build()


@pytest.fixture(scope="session")
def virtualbox() -> str:
    """VirtualBox's VBoxManage; marks the test `virtualbox`. A skip even in CI: VirtualBox cannot be installed there,
    so such a test is reported as not run, never as passed (the stand-in's tests cover the flow)."""
    import shutil

    found = shutil.which("VBoxManage")
    if not found:
        pytest.skip("VirtualBox is not installed here (VBoxManage not on PATH): not run")
    return found


@pytest.fixture(scope="session")
def root() -> None:
    """Root privileges (mounts, cgroups, network namespaces, the guest image build); marks the test `root`."""
    require_root("mounts, cgroups, network namespaces and the guest image build are root's")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The study pool cache of this test session (of this xdist worker), and the user's guest image cache.

    The pools are built here, per worker: two processes filling one pool folder at once could
    read each other's half-written studies. The guest image (minutes to build) is the user's,
    shared: it is built once, under a lock (tests/helpers/guests.py), and guests boot in two lanes."""
    from bench.targets.vm.image import vm_cache

    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PACSBENCH_VM_CACHE", str(vm_cache()))  # before PACSBENCH_CACHE moves its default
        patch.setenv("PACSBENCH_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session", autouse=True)
def session_state(tmp_path_factory):
    """User state (calibrations) for what runs before a test's own: module and session fixtures."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PACSBENCH_STATE", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(autouse=True)
def private_state(session_state, tmp_path_factory, monkeypatch):
    """User state (calibrations) of this test alone: never the user's, nor another test's.

    A calibration one test makes would change what the disk planner says in the next (it plans
    with the calibrated ceiling), so each test starts with none."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("PACSBENCH_STATE", str(state))
    return state


@pytest.fixture(autouse=True)
def no_archive_left():
    """No archive outlives the test that started it, even when a fixture fails before it stops it."""
    before = len(STARTED)
    yield
    stop_archives_started_since(before)


@pytest.fixture(scope="session")
def tiny_studies(tmp_path_factory):
    """Two tiny synthetic studies on disk (generated once per test session)."""
    from bench.studies.generate import generate
    from bench.studies.profile import load_profile

    out = tmp_path_factory.mktemp("tiny-studies")
    generate(load_profile("tiny"), 2, 7, out, progress=False)
    return out


@pytest.fixture
def archive(tmp_path):
    running = start_archive(tmp_path / "archive")
    yield running
    running.stop()


@pytest.fixture
def unused_port() -> int:
    return free_local_port()
