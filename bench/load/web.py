"""locust's own web UI on a running load: `pacsbench run --web`.

The UI is locust's (its statistics per operation, charts, failures, workers, stop button),
created on the run's Environment once its runner exists, so it attaches to a load that
starts by itself (locust's `--autostart`, without the start form). Extensions (the live
page) hook in as locust's do: listeners of the Environment's `init` event, fired with the
web UI before it serves its first request.

A stop from the UI (locust's POST /stop) is noted here, and the engine ends the load as
it does on Ctrl-C. A login is locust's `--web-login` (flask-login; locust 2.21 replaced its
HTTP basic auth with it), with one user and password given to `pacsbench run --web-auth`.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from flask import Blueprint, redirect, request, session, url_for
from flask_login import UserMixin, login_user
from locust.env import Environment
from locust.stats import stats_history
from locust.web import WebUI

from bench.common.errors import UserError

STOP_ENDPOINT = "locust.stop"  # locust's blueprint is named "locust"; its stop button POSTs /stop
# The scenario runs as written: locust's Edit and New (POST /swarm) would change its users mid-run, and its
# Reset (/stats/reset) would make the run folder's locust CSVs disagree with samples.csv.
REFUSED_ENDPOINTS = ("locust.swarm", "locust.reset_stats")


@dataclass(frozen=True)
class WebSettings:
    """Where the web UI listens, and the one login it accepts (None: no login, loopback only)."""

    host: str = "127.0.0.1"
    port: int = 8089
    auth: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def web_settings(host: str, port: int, auth: str | None) -> WebSettings:
    """The settings of `--web-host`, `--web-port` and `--web-auth USER:PASSWORD`: a non-local address needs a login."""
    if not 1 <= port <= 65535:
        raise UserError(f"--web-port {port}: give a port from 1 to 65535")
    login = None
    if auth:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise UserError("--web-auth (or PACSBENCH_WEB_AUTH) must be USER:PASSWORD, both non-empty")
        login = (user, password)
    if not _loopback(host) and login is None:
        raise UserError(
            f"--web-host {host} would show the run to other machines: give a login with --web-auth USER:PASSWORD "
            "or PACSBENCH_WEB_AUTH"
        )
    _check_listen(host, port)
    return WebSettings(host, port, login)


def _loopback(host: str) -> bool:
    """Only this machine can reach `host` (127.0.0.0/8, ::1, localhost); a name or any other address may be seen."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_listen(host: str, port: int) -> None:
    """A one-line error before the run starts, not a web server failing in its greenlet later."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gevent's server will
            probe.bind((host, port))
    except OSError as exc:
        raise UserError(f"the web UI cannot listen on {host}:{port} ({exc.strerror or exc})") from None


class RunWebUI(WebUI):
    """locust's WebUI, embedded: its page's "extra options" are parsed from the process's command line by
    locust's own parser (locust's `ui_extra_args_dict`), which refuses pacsbench's options; it sees none."""

    def update_template_args(self):
        argv = sys.argv
        sys.argv = argv[:1]  # no greenlet switch inside: locust's parser does no network I/O
        try:
            super().update_template_args()
        finally:
            sys.argv = argv


class _Login(UserMixin):
    def __init__(self, name: str):
        self.id = name


def _add_login(web_ui: WebUI, user: str, password: str) -> None:
    """locust's login page (auth.html) with a user name and password form, checked against the one login."""
    app = web_ui.app
    app.config["SECRET_KEY"] = secrets.token_hex(32)  # sessions of this run only
    web_ui.login_manager.user_loader(lambda name: _Login(name) if name == user else None)
    web_ui.auth_args = {"username_password_callback": "/pacsbench-login"}
    login = Blueprint("pacsbench_login", __name__)

    @login.route("/pacsbench-login", methods=["POST"])
    def check_login():
        given_user = request.form.get("username", "")
        given_password = request.form.get("password", "")
        # Both compared in constant time; the password is never logged or stored.
        if hmac.compare_digest(given_user.encode(), user.encode()) & hmac.compare_digest(
            given_password.encode(), password.encode()
        ):
            login_user(_Login(user))
            return redirect(url_for("locust.index"))
        session["auth_error"] = "Wrong user name or password"
        return redirect(url_for("locust.login"))

    app.register_blueprint(login)


def create_web_ui(env: Environment, settings: WebSettings, on_stop: Callable[[], None]) -> WebUI:
    """locust's web UI on `env`'s runner, extended by the `init` listeners, not served yet (serve_web_ui).

    Made before the load, so that its making costs the load nothing. `on_stop` is called when someone
    presses the UI's stop button."""
    web_ui = RunWebUI(env, settings.host, settings.port, web_login=settings.auth is not None, delayed_start=True)
    if settings.auth:
        _add_login(web_ui, *settings.auth)

    @web_ui.app.before_request
    def refuse_changes():
        if request.endpoint in REFUSED_ENDPOINTS:
            return "pacsbench runs the scenario as written: change its file and run it again", 409
        return None

    @web_ui.app.after_request
    def note_stop(response):
        # After locust's own handler: a stop refused (no login) is no stop.
        if request.endpoint == STOP_ENDPOINT and request.method == "POST" and response.status_code == 200:
            on_stop()
        return response

    env.events.init.fire(environment=env, runner=env.runner, web_ui=web_ui)
    return web_ui


def serve_web_ui(web_ui: WebUI, settings: WebSettings) -> gevent.Greenlet:
    """Serve the UI made by create_web_ui, and say where; return the greenlet keeping the charts' history.

    locust's page draws its charts from the runner's stats history (which locust's own main keeps):
    a page opened in the middle of a run shows them from the load's start."""
    history = gevent.spawn(stats_history, web_ui.environment.runner)
    web_ui.start()
    login = f"; login as {settings.auth[0]}" if settings.auth else ""
    print(f"pacsbench: web UI at {settings.url} (live page {settings.url}pacsbench/live){login}", file=sys.stderr)
    return history
