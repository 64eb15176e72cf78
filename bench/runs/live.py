"""The live page of `pacsbench run --web`: what locust's own UI does not show, added to it the locust way.

An `init` listener (locust's extension hook) registers a Flask blueprint on the web UI's app:
/pacsbench/live (a page, package data, its script inline: no CDN) and /pacsbench/live.json,
which it polls. It also adds two tabs to locust's UI (`extended_tabs`, filled by
`extended_stats` in /stats/requests): the figures per user type and the target's resources.
The figures themselves are bench.runs.live_figures'.
"""

from __future__ import annotations

import json
from importlib import resources

from flask import Blueprint, Response, jsonify, request

from bench.load.engine import REPORT_KEY
from bench.results.samples import SAMPLES_FILE
from bench.runs.live_figures import LiveFigures

FIGURES_TAB, RESOURCES_TAB = "dicom-figures", "target-resources"
PAGE = "live_page.html"


class LivePage(LiveFigures):
    """The live figures of one run, served by locust's web UI once it fires `init`."""

    # -- locust's extension hook ------------------------------------------------------------
    def on_init(self, environment, web_ui=None, **_) -> None:
        """locust's init listener: the rows' sources, the blueprint, the tabs."""
        environment.events.request.add_listener(self.rates.on_request)
        environment.events.worker_report.add_listener(self.on_worker_report)
        if web_ui is None:
            return
        web_ui.app.register_blueprint(self._blueprint(web_ui))
        web_ui.template_args.update(
            extended_tabs=[
                {"title": "DICOM figures", "key": FIGURES_TAB},
                {"title": "Target resources", "key": RESOURCES_TAB},
            ],
            extended_tables=[
                {
                    "key": FIGURES_TAB,
                    "structure": [
                        {"key": "user_type", "title": "User type"},
                        {"key": "requests_per_s", "title": "Requests/s"},
                        {"key": "failed_per_s", "title": "Failed/s"},
                        {"key": "instances_per_s", "title": "Instances/s"},
                        {"key": "frames_per_s", "title": "Frames/s"},
                        {"key": "mb_per_s", "title": "MB/s"},
                    ],
                },
                {
                    "key": RESOURCES_TAB,
                    "structure": [
                        {"key": "name", "title": "Resource (server_metrics.csv)"},
                        {"key": "now", "title": "Last second"},
                        {"key": "mean", "title": "Mean since the load started"},
                    ],
                },
            ],
            # locust shows these links on its Download Data tab: the way to the live page from its UI
            extended_csv_files=[{"href": "/pacsbench/live", "title": "pacsbench live page (resources, faults, bound)"}],
        )

        @web_ui.app.after_request
        def extend_stats(response: Response) -> Response:
            if request.path == "/stats/requests" and response.is_json and response.status_code == 200:
                response.set_data(json.dumps({**response.get_json(), "extended_stats": self.extended_stats()}))
            return response

    def _blueprint(self, web_ui) -> Blueprint:
        page = Blueprint("pacsbench_live", __name__, url_prefix="/pacsbench")

        @page.route("/live")
        @web_ui.auth_required_if_enabled
        def live_page() -> Response:
            html = resources.files("bench.runs").joinpath(PAGE).read_text(encoding="utf-8")
            return Response(html, mimetype="text/html")

        @page.route("/live.json")
        @web_ui.auth_required_if_enabled
        def live_json() -> Response:
            runner = web_ui.environment.runner
            return jsonify(self.snapshot(runner.state, runner.user_count))

        return page

    def on_worker_report(self, client_id: str, data: dict) -> None:
        """The rows riding in a worker's report (bench.load.engine puts them there)."""
        for row in (data.get(REPORT_KEY) or {}).get(SAMPLES_FILE, ()):
            self.rates.add(row)

    def extended_stats(self) -> list[dict]:
        """The two tabs' rows in locust's extended_stats form."""
        return [
            {"key": FIGURES_TAB, "data": self.user_type_rows()},
            {"key": RESOURCES_TAB, "data": self.resource_rows()},
        ]
