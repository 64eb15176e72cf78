"""A report's sections in reading order, for one run and for a comparison: each family of sections is
built by its own module (throughput, modalities, protocols, pictures, faults, growth, runs, claims, environment)."""

from __future__ import annotations

from bench.analysis.aggregate import Settings
from bench.analysis.compare import Group
from bench.report.answer import answer
from bench.report.claims import claims_section
from bench.report.environment import environment_section, method_section
from bench.report.faults import faults_section
from bench.report.growth import growth_section
from bench.report.modalities import modalities_section
from bench.report.model import Report, Section
from bench.report.pictures import figures_section
from bench.report.protocols import protocols_section
from bench.report.runs import errors_section, runs_section
from bench.report.throughput import headline_section, target_sections


def _sections(data: dict, groups: list[Group], settings: Settings) -> list[Section]:
    """The figures, the evidence (faults, growth, errors, claims), the runs, the method."""
    optional = [faults_section(groups), growth_section(data)]
    modalities = modalities_section(groups)
    protocols = protocols_section(data, groups)
    return [
        *target_sections(data),
        *([modalities] if modalities else []),
        *([protocols] if protocols else []),
        figures_section(data, groups, settings),
        *(section for section in optional if section),
        errors_section(groups),
        claims_section(data),
        runs_section(groups),
        environment_section(data),
        method_section(data),
    ]


def run_report(
    title: str, data: dict, groups: list[Group], settings: Settings, integrity: str, notes: list[str]
) -> Report:
    """One run: the answer and the notes a reader needs first, its headline figures, then the sections."""
    headline = headline_section(groups[0].summaries[0], data, integrity)
    return Report(title, [answer(data), *notes], [headline, *_sections(data, groups, settings)])


def comparison_report(title: str, data: dict, groups: list[Group], settings: Settings) -> Report:
    return Report(title, [answer(data)], _sections(data, groups, settings))
