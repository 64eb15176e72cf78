"""The `matrix` stage: one scenario against several targets, order rotated per repetition (ABC, BCA, CAB).

Rotating spreads slow drifts of a shared machine (other jobs, thermal, page cache) over every
target, and no target always runs first (cold) or right after the same other one. Dirty pages
are written out (sync) before each run so that one run's writes are not flushed during the
next. The matrix folder holds one run folder per repetition and target, and matrix.json listing
them (and the order they ran in) for `pacsbench compare`.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from bench.common.errors import UserError
from bench.common.tomlfile import explain
from bench.results.record_base import write_record
from bench.results.records import MATRIX_FILE, MatrixRecord, MatrixRun
from bench.results.run_folder import new_run_dir
from bench.scenario.file import Scenario, load_scenario
from bench.scenario.targets import KINDS, TARGET_MODELS, TargetSpec, VmSpec

if TYPE_CHECKING:  # the annotation only: locust (bench.load) is imported by run_scenario, after gevent's patch
    from bench.load.web import WebSettings

NAME = re.compile(r"^(?P<kind>[a-z]+)(?:-(?P<network>user|tap))?$")


def resolve_target(scenario: Scenario, name: str) -> TargetSpec:
    """A named [targets.NAME] table, else a kind ("tcg", or "tcg-tap" for its network) on the scenario's target."""
    if name in scenario.targets:
        spec = scenario.targets[name]
        return spec if spec.label else spec.model_copy(update={"label": name})
    match = NAME.match(name)
    networked = [kind for kind, model in TARGET_MODELS.items() if issubclass(model, VmSpec)]  # user or tap
    if not match or match["kind"] not in KINDS:
        known = ", ".join([*scenario.targets, *KINDS, *(f"{kind}-tap" for kind in networked)])
        raise UserError(f"unknown target {name!r} (known: {known})")
    kind, model = match["kind"], TARGET_MODELS[match["kind"]]
    base = scenario.target.model_dump(exclude_unset=True, exclude={"kind", "label"})
    if scenario.target.kind == "esxi" and kind != "esxi":
        # An esxi target's host is the vSphere server and its port the VM's: neither is the other kind's address.
        base = {key: value for key, value in base.items() if key not in ("host", "port")}
    # Keep only the scenario's settings that this kind takes (fsync, max_pdu, ae_title ...).
    kept = {key: value for key, value in base.items() if key in model.model_fields}
    if match["network"]:
        if kind not in networked:
            raise UserError(f"target {name!r}: only {' and '.join(networked)} targets have a network mode")
        kept["network"] = match["network"]
        kept.pop("port", None)
    if kind == "remote" and scenario.target.kind != "remote":
        raise UserError("a remote target needs its address: define it in the scenario's [target] or [targets.NAME]")
    try:
        return model(label=name, **kept)
    except ValidationError as exc:
        raise UserError(f"target {name!r}: {explain(exc, model)}") from None


DEFAULT_REPEAT = 3


def rotated_order(names: list[str], repetition: int) -> list[str]:
    """The targets of repetition `repetition` (from 1): ABC, then BCA, then CAB, then ABC again."""
    shift = (repetition - 1) % len(names)
    return names[shift:] + names[:shift]


def run_matrix(
    scenario_path: Path,
    names: list[str],
    repeat: int = DEFAULT_REPEAT,
    results_root: Path = Path("results"),
    progress: bool = True,
    web: WebSettings | None = None,
) -> Path:
    """Run every target `repeat` times, order rotated per repetition; return the matrix folder (with matrix.json).

    With `web`, each run in turn serves the web UI on the same address; its live page says which run it is."""
    from bench.runs.scenario_run import run_scenario  # imports locust first (gevent)

    if repeat < 1:
        raise UserError("--repeat must be at least 1")
    scenario = load_scenario(scenario_path)
    if len(set(names)) != len(names):
        raise UserError(f"a target is listed twice: {','.join(names)}")
    specs = {name: resolve_target(scenario, name) for name in names}
    prepare_guest_image(specs.values(), progress)
    folder = new_run_dir(results_root, f"matrix-{scenario.name}")
    sequence = [rotated_order(names, r) for r in range(1, repeat + 1)]
    runs: list[MatrixRun] = []
    for repetition, order in enumerate(sequence, start=1):
        for name in order:
            print(f"matrix: repetition {repetition}/{repeat}, target {name}", file=sys.stderr, flush=True)
            os.sync()  # the previous run's dirty pages are written now, not during this run
            caption = f"{folder.name}: repetition {repetition}/{repeat}, target {name}"
            run_dir, record = run_scenario(
                scenario_path, folder, progress=progress, target_spec=specs[name], web=web, caption=caption
            )
            runs.append(
                MatrixRun(
                    folder=run_dir.name,
                    target=name,
                    repetition=repetition,
                    hypervisor=record.target.hypervisor if record.target else None,
                    status=record.status,
                )
            )
            write_record(
                folder / MATRIX_FILE,
                MatrixRecord(
                    scenario=scenario.name,
                    scenario_file=str(scenario_path),
                    targets=names,
                    repeat=repeat,
                    order="rotated",
                    sequence=sequence,
                    sync_before_each_run=True,
                    runs=runs,
                ),
            )
    return folder


def prepare_guest_image(specs, progress: bool) -> None:
    """Build (or find) the guest image once, before the first run, so no run's time includes it."""
    if any(spec.kind in ("kvm", "tcg") for spec in specs):
        from bench.targets.vm.image import ensure_image

        ensure_image(progress=progress)
