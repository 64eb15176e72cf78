"""The claims stage: published figures (a paper's, a vendor's) next to what a run measured.

Claims are data: TOML files (bench/analysis/claims/*.toml ship with pacsbench; pass your own with
--claims). Each claim names a metric and a bound; the verdict is pass, fail, "not measured"
(the run had no such operation) or "not comparable" (the claim was made under a load the
run did not reach, e.g. 20 reading workstations).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bench.analysis.aggregate import METRICS
from bench.common.tomlfile import load_model

SHIPPED = Path(__file__).resolve().parent / "claims"
# One year of the seed paper's load (20 studies of 30 MB a day): the archive size its recovery
# claim is judged at. Restoring it takes SEED_YEAR_BYTES / restore speed.
SEED_YEAR_BYTES = 20 * 30e6 * 365
EXTRA_METRICS = {
    "study_seconds_per_30mb": "s per 30 MB study",
    "restore_hours_per_year": "h to restore one year (20 x 30 MB studies a day, 219 GB)",
}


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    statement: str
    metric: str
    at_least: float | None = None
    at_most: float | None = None
    user_type: str | None = None
    min_users: int | None = Field(default=None, ge=1)
    measured_by: str | None = None  # where the figure comes from when a run does not measure it

    @field_validator("metric")
    @classmethod
    def known_metric(cls, value: str) -> str:
        if value not in METRICS and value not in EXTRA_METRICS:
            raise ValueError(
                f"unknown metric {value!r} (e.g. ingest_instances_per_s, retrieve_instances_per_s, "
                "c_store_p95_ms, study_seconds_per_30mb)"
            )
        return value

    @model_validator(mode="after")
    def one_bound(self) -> "Claim":
        if self.at_least is None and self.at_most is None:
            raise ValueError(f"claim {self.name!r} needs at_least or at_most")
        return self

    @property
    def unit(self) -> str:
        return METRICS[self.metric].unit if self.metric in METRICS else EXTRA_METRICS[self.metric]

    def bound_text(self) -> str:
        parts = []
        if self.at_least is not None:
            parts.append(f">= {self.at_least:g}")
        if self.at_most is not None:
            parts.append(f"<= {self.at_most:g}")
        return f"{' and '.join(parts)} {self.unit}"


class ClaimSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    source: str = ""
    claims: list[Claim] = Field(min_length=1)


def load_claims(paths: list[Path] | None = None) -> list[ClaimSet]:
    """The given claim files, or every file shipped in bench/analysis/claims/."""
    files = paths if paths else sorted(SHIPPED.glob("*.toml"))
    return [load_model(path, ClaimSet, "claims") for path in files]


class VerdictFigures(TypedDict):
    """A verdict as summary.json and the report's claims table hold it (Verdict.as_dict)."""

    name: str
    statement: str
    metric: str
    bound: str
    measured: float | None
    verdict: str
    note: str


class ClaimSetFigures(TypedDict):
    """One claim file's verdicts (judge_all)."""

    title: str
    source: str
    verdicts: list[VerdictFigures]


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    measured: float | None
    verdict: str  # pass, fail, not measured, not comparable
    note: str = ""

    def as_dict(self) -> VerdictFigures:
        return {
            "name": self.claim.name,
            "statement": self.claim.statement,
            "metric": self.claim.metric,
            "bound": self.claim.bound_text(),
            "measured": self.measured,
            "verdict": self.verdict,
            "note": self.note,
        }


def judge(claim: Claim, metrics: Mapping[str, float | None], users_by_type: Mapping[str, int]) -> Verdict:
    measured = metrics.get(claim.metric)
    if measured is None:
        note = (
            f"not measured by this run: {claim.measured_by}" if claim.measured_by else "the run has no such operation"
        )
        return Verdict(claim, None, "not measured", note)
    if claim.min_users:
        users = users_by_type.get(claim.user_type, 0) if claim.user_type else sum(users_by_type.values())
        if users < claim.min_users:
            who = f"{claim.user_type} users" if claim.user_type else "users"
            return Verdict(
                claim, measured, "not comparable", f"{users} {who} measured, the claim is for {claim.min_users}"
            )
    ok = (claim.at_least is None or measured >= claim.at_least) and (claim.at_most is None or measured <= claim.at_most)
    return Verdict(claim, measured, "pass" if ok else "fail")


def restore_hours_per_year(restore_mb_per_s: float) -> float:
    """Hours to restore one year of the seed paper's load at a measured restore speed."""
    return SEED_YEAR_BYTES / (restore_mb_per_s * 1e6) / 3600


def judge_all(
    claim_sets: list[ClaimSet], metrics: Mapping[str, float | None], users_by_type: Mapping[str, int]
) -> list[ClaimSetFigures]:
    return [
        {
            "title": s.title,
            "source": s.source,
            "verdicts": [judge(c, metrics, users_by_type).as_dict() for c in s.claims],
        }
        for s in claim_sets
    ]
