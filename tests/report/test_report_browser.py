"""Headless Chromium opens report.html from disk: no console error, no request off the file,
every figure decoded, hostile strings shown as text. Driven over the DevTools protocol."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from synthetic import write_run

from bench.report.page import build_comparison_report

SCRIPT = "<script>alert(1)</script>"
PAGE_STATE = """JSON.stringify({
  images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
  scripts: document.scripts.length,
  shownAsText: document.body.innerText.includes(%s)
})"""


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
