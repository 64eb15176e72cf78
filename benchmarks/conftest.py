"""Microbenchmarks of the harness's hot paths (pytest-benchmark), kept out of the normal test run.

.venv/bin/pip install -e '.[bench]'
.venv/bin/pytest benchmarks --benchmark-autosave                     # save a baseline
.venv/bin/pytest benchmarks --benchmark-compare --benchmark-compare-fail=mean:25%   # fail on a slower path
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("pytest_benchmark", reason="pip install -e '.[bench]'")


@pytest.fixture(scope="session")
def pool(tmp_path_factory):
    """The tiny profile's study pool, synthesized into a private cache."""
    os.environ["PACSBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from bench.studies.pool import StudyPool
    from bench.studies.profile import load_profile

    return StudyPool.prepare(load_profile("tiny"), 2, 1, progress=False)
