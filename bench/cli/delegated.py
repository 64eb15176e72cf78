"""Verbs whose options the reference archive parses itself: it runs without bench inside a guest,
so `serve` and `archive` hand everything after the verb to server_under_test's own parser."""

from __future__ import annotations


def add_delegated_verb(sub, name: str, func, summary: str, description: str) -> None:
    """List the verb in `pacsbench --help`; main() passes its arguments through untouched."""
    p = sub.add_parser(name, help=summary, description=description, add_help=False)
    p.set_defaults(func=func)
