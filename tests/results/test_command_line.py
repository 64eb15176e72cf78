"""run.json's command: a password given on the command line is never recorded."""

from __future__ import annotations

import pytest

from bench.results.run_file import command_line


@pytest.mark.parametrize(
    "argv",
    [
        ["pacsbench", "run", "s.toml", "--web", "--web-auth", "alice:pw"],
        ["pacsbench", "run", "s.toml", "--web", "--web-auth=alice:pw"],
        ["pacsbench", "run", "s.toml", "--web", "--web-a", "alice:pw"],  # argparse's abbreviation
    ],
)
def test_the_web_login_is_hidden_and_the_rest_kept(argv):
    recorded = command_line(argv)
    assert not any("pw" in arg for arg in recorded)
    assert recorded[:4] == argv[:4] and len(recorded) == len(argv)


def test_a_command_without_secrets_is_recorded_as_given():
    argv = ["pacsbench", "run", "s.toml", "--web", "--web-host", "0.0.0.0", "--workers", "2"]
    assert command_line(argv) == argv
