"""report.html from the report's sections, through the Jinja2 templates in bench/report/templates.

Autoescaping is on: every string that came from a user or from DICOM reaches the page as text. Figures are
inlined as base64 PNG, so the page is one file that opens offline.
"""

from __future__ import annotations

import base64
from functools import cache

import jinja2

from bench.report.model import Bullets, Figure, Note, Part, Report, Table


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the report instead of leaving a blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["base64"] = lambda png: base64.b64encode(png).decode("ascii")
    environment.tests.update(
        note=lambda b: isinstance(b, Note),
        table=lambda b: isinstance(b, Table),
        figure=lambda b: isinstance(b, Figure),
        bullets=lambda b: isinstance(b, Bullets),
        part=lambda b: isinstance(b, Part),
    )
    return environment


def render_html(report: Report) -> str:
    return _environment().get_template("report.html.j2").render(report=report)
