"""Helpers the tests share (on pytest's pythonpath, see pyproject.toml): tools, a running archive, DICOM bytes.

Fixtures and hooks stay in tests/conftest.py; what a test imports lives here.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: the working folder of the commands tests run
