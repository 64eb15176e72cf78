"""Headless Chromium opens report.html from disk: no console error, no request off the file,
every figure decoded, hostile strings shown as text. Driven over the DevTools protocol."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from synthetic import write_run

from bench.report.page import build_comparison_report

SCRIPT = "<script>alert(1)</script>"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--window-size=1100,1400",
]
PAGE_STATE = """JSON.stringify({
  images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
  scripts: document.scripts.length,
  shownAsText: document.body.innerText.includes(%s)
})"""


class DevTools:
    """The smallest DevTools client the test needs: send commands, keep every event."""

    def __init__(self, websocket_url: str):
        import websocket

        self.socket = websocket.create_connection(websocket_url, timeout=30, suppress_origin=True)
        self.events: list[dict] = []
        self._next_id = 0

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self._next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(json.loads(self.socket.recv()))
        raise AssertionError(f"no {method} within {timeout} s")

    def close(self) -> None:
        self.socket.close()


def _devtools_port(profile: Path, process: subprocess.Popen, timeout: float = 30.0) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        assert process.poll() is None, "chromium exited early"
        time.sleep(0.1)
    raise AssertionError("chromium did not open its DevTools port")


@pytest.fixture
def browser(chromium, tmp_path):
    """Chromium on an empty page, driven through its DevTools protocol."""
    binary = chromium
    pytest.importorskip("websocket", reason="pip install websocket-client (in the test extra)")
    profile = tmp_path / "profile"
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = _devtools_port(profile, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        client = DevTools(page["webSocketDebuggerUrl"])
        yield client
        client.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _hostile_comparison(root: Path) -> Path:
    extra = {"target": {"kind": "remote", "label": SCRIPT, "hypervisor": SCRIPT}}
    native = write_run(
        root / "native", rate=60, seconds=8, scenario=SCRIPT, failures=2, error_text=f"PatientName {SCRIPT}"
    )
    vm = write_run(root / "vm", rate=45, seconds=8, seed=2, scenario=SCRIPT, run_extra=extra, find_rate=4)
    return build_comparison_report([native, vm], root / "cmp")


def test_report_opens_offline_in_chromium_and_renders_its_figures(browser, tmp_path):
    report = _hostile_comparison(tmp_path)
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=report.as_uri())
    browser.wait_for("Page.loadEventFired")
    state = json.loads(
        browser.call("Runtime.evaluate", expression=PAGE_STATE % json.dumps(SCRIPT), returnByValue=True)["result"][
            "value"
        ]
    )
    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
    (tmp_path / "report.png").write_bytes(shot)

    methods = [e.get("method") for e in browser.events]
    errors = [
        e
        for e in browser.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]
    requested = [
        e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"
    ]
    assert errors == []
    assert "Page.javascriptDialogOpening" not in methods  # the injected alert() never ran
    assert state["scripts"] == 0 and state["shownAsText"]
    assert len(state["images"]) >= 3 and all(i["complete"] and i["width"] > 0 for i in state["images"]), state
    assert all(url.startswith(("file:", "data:")) for url in requested), requested
    assert shot.startswith(b"\x89PNG") and _is_not_blank(tmp_path / "report.png")


def _is_not_blank(png: Path) -> bool:
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    return float(pixels[..., :3].std()) > 0.01
