"""The study pools of a run: one per profile its modalities send ([studies] profile and each group's own).

The master and every worker prepare the same pools (cached on disk by profile, seed, scale
and transfer syntax), so any process can play any modality.
"""

from __future__ import annotations

from bench.scenario.file import Scenario
from bench.studies.pool import StudyPool
from bench.studies.profile import AnyProfile, StudyProfile, load_profile


def run_profiles(scenario: Scenario) -> list[str]:
    """The profile names the run sends: [studies] profile first, then the modality groups' own, once each."""
    names = [scenario.studies.profile]
    names += [g.profile for g in scenario.users.modality_groups().values() if g.profile]
    return list(dict.fromkeys(names))


def scenario_profile(scenario: Scenario, name: str) -> AnyProfile:
    """A profile as the run sends it: [studies] scale applied to modality profiles."""
    profile = load_profile(name)
    if scenario.studies.scale is not None and isinstance(profile, StudyProfile):
        profile = profile.scaled(scenario.studies.scale)
    return profile


def prepare_pools(scenario: Scenario, progress: bool = True) -> dict[str, StudyPool]:
    """Synthesize (once, cached) and load every pool of the run, by profile name.

    [studies] transfer_syntax applies to the [studies] profile; the groups' profiles use their own."""
    studies = scenario.studies
    pools = {}
    for index, name in enumerate(run_profiles(scenario)):
        profile = scenario_profile(scenario, name)
        syntax = (studies.transfer_syntax if index == 0 else None) or profile.transfer_syntax
        pools[name] = StudyPool.prepare(profile, studies.pool, studies.seed, progress=progress, transfer_syntax=syntax)
    return pools
