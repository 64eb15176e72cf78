"""The command line's frame: every verb is listed and explains itself, bad input is one line,
and parsing imports nothing that would open a socket or start a thread before gevent patches."""

import subprocess
import sys

import pytest

from bench.cli.main import build_parser, main

VERBS = [
    "generate",
    "serve",
    "archive",
    "run",
    "send",
    "calibrate",
    "verify",
    "worker",
    "report",
    "compare",
    "gate",
    "baseline",
    "matrix",
    "vm",
]


def test_an_unknown_verb_lists_every_verb_in_order(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["nope"])
    assert exit_.value.code == 2
    listed = capsys.readouterr().err.split("(choose from ", 1)[1].rstrip(")\n")
    assert listed == ", ".join(f"'{verb}'" for verb in VERBS)


@pytest.mark.parametrize(
    "command",
    [[verb] for verb in VERBS if verb not in ("serve", "archive", "baseline", "vm")]
    + [["baseline", "save"], ["vm", "build"], ["vm", "check"], ["vm", "export"]],
    ids=" ".join,
)
def test_each_verb_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: pacsbench {' '.join(command)} ")


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["send", str(tmp_path), "--host", "127.0.0.1", "--port", "1", "--aet", "A", "--associations", "0"])
    assert code == 2
    assert capsys.readouterr().err == "pacsbench: error: --associations must be 1 or more\n"


def test_parsing_leaves_sockets_and_threads_to_the_commands():
    # run, worker and matrix patch the process with gevent in main(), after the parser is built:
    # a verb module that imports socket or threading at its top would be patched too late.
    script = (
        "import sys; from bench.cli.main import build_parser; build_parser(); "
        "print(' '.join(m for m in ('socket', 'ssl', 'threading', 'gevent', 'locust') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
