"""Run folders with synthetic sample rows at known rates, for report, compare and gate tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.results.run_file import write_run_json
from bench.results.run_record import RunRecord
from bench.results.samples import Sample, SampleWriter

T0 = 1_700_000_000.0
MB_PER_INSTANCE = 1.0
FRAMES_PER_INSTANCE = 4
# A DICOMweb request's row: user type, instances, frames, bytes (a STOW-RS of a 5-instance study; a WADO-RS frames
# request of 2 frames; a study's metadata describing 5 instances).
WEB_ROWS = {
    "STOW-RS": ("stow", 5, 5 * FRAMES_PER_INSTANCE, int(5 * MB_PER_INSTANCE * 1e6)),
    "WADO-RS frames": ("wado", 0, 2, 2 * 250_000),
    "WADO-RS metadata": ("wado", 5, 0, 20_000),
}


def arrivals(rate: float, seconds: float, rng: np.random.Generator, burstiness: float = 0.0) -> np.ndarray:
    """Poisson arrival times at `rate` per second; `burstiness` > 0 varies the rate from second to second."""
    times = []
    for second in range(int(seconds)):
        local = rate * (rng.lognormal(0.0, burstiness) if burstiness else 1.0)
        times.append(second + np.sort(rng.uniform(0, 1, rng.poisson(local))))
    return np.concatenate(times)


def write_run(
    folder: Path,
    rate: float = 100.0,
    seconds: float = 20.0,
    seed: int = 1,
    target: str = "native",
    scenario: str = "synthetic",
    users: int = 4,
    latency_ms: float = 20.0,
    failures: int = 0,
    find_rate: float = 0.0,
    get_rate: float = 0.0,
    burstiness: float = 0.0,
    run_extra: dict | None = None,
    error_text: str = "C-STORE status 0xA700",
    web_rates: dict[str, float] | None = None,
) -> Path:
    """A run folder whose C-STOREs (and optional C-FINDs, C-GETs and DICOMweb requests: `web_rates` by operation, see
    WEB_ROWS) arrive at known rates."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("C-STORE", "modality", t) for t in arrivals(rate, seconds, rng, burstiness)]
    if find_rate:
        rows += [("C-FIND", "query", t) for t in arrivals(find_rate, seconds, rng)]
    if get_rate:  # a C-GET of one instance each
        rows += [("C-GET", "workstation", t) for t in arrivals(get_rate, seconds, rng)]
    for operation, web_rate in (web_rates or {}).items():
        rows += [(operation, WEB_ROWS[operation][0], t) for t in arrivals(web_rate, seconds, rng)]
    rows.sort(key=lambda r: r[2])
    writer = SampleWriter(folder / "samples.csv")
    for i, (operation, user_type, t) in enumerate(rows):
        failed = operation == "C-STORE" and i < failures
        store = operation in ("C-STORE", "C-GET")  # both move one instance
        instances, frames, size = (
            WEB_ROWS[operation][1:]
            if operation in WEB_ROWS
            else (int(store), FRAMES_PER_INSTANCE * int(store), int(MB_PER_INSTANCE * 1e6) * int(store))
        )
        writer.write(
            Sample(
                start=T0 + t,
                worker="w",
                user=f"{user_type}-{i % users}",
                user_type=user_type,
                association=f"a{i % users}",
                operation=operation,
                sop_instance_uid=f"1.2.{i}" if store else "",
                study_instance_uid=f"1.2.9.{i // 5}",
                instances=instances,
                frames=frames,
                bytes=size,
                latency_ms=float(rng.lognormal(np.log(latency_ms), 0.3)),
                status=200 if operation in WEB_ROWS else 0xA700 if failed else 0,
                error=error_text if failed else "",
            )
        )
    writer.close()
    run = {
        "run_id": folder.name,
        "status": "completed",
        "scenario": {"name": scenario, "load": {"users": users, "duration": seconds}},
        "target": {"kind": target, "label": target},
        "host": {"hostname": "h", "cpus": 2},
    }
    write_run_json(folder, RunRecord.model_validate(run | (run_extra or {})))
    return folder
