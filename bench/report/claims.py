"""The published-claims section: each claim file's claims against every target's measured figure."""

from __future__ import annotations

from bench.report.model import Note, Section, Table
from bench.report.text import num


def _claim_tables(data: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per claim file: one row per claim, one column per target ("measured: verdict")."""
    tables = []
    first = data["groups"][0]["claims"]
    for i, claim_set in enumerate(first):
        headers = ["published claim", "bound", *(g["label"] for g in data["groups"])]
        rows = []
        for j, verdict in enumerate(claim_set["verdicts"]):
            cells = [_verdict_text(g["claims"][i]["verdicts"][j]) for g in data["groups"]]
            rows.append([verdict["statement"], verdict["bound"], *cells])
        tables.append((f"{claim_set['title']}. {claim_set['source']}".strip(), headers, rows))
    return tables


def _verdict_text(v: dict) -> str:
    measured = "" if v["measured"] is None else f"{num(v['measured'], 2)}: "
    return f"{measured}{v['verdict'].upper()}" + (f" ({v['note']})" if v["note"] else "")


def claims_section(data: dict) -> Section:
    tables = [Table(headers, rows, caption) for caption, headers, rows in _claim_tables(data)]
    return Section("Published claims", tables or [Note("No claim was checked.")])
