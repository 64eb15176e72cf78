"""The `pacsbench` command line: one module per verb, `main` parses and dispatches."""

from bench.cli.main import main

__all__ = ["main"]
