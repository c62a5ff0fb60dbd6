"""The Flask app: our views at ``/``, rq-dashboard under ``/rq``, basic auth in front."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, Response, abort, request

from chem_persistence.worker.dashboard import auth, rqmount
from chem_persistence.worker.dashboard.csrf import Tokens, same_origin
from chem_persistence.worker.dashboard.data import Context
from chem_persistence.worker.dashboard.settings import DashboardSettings
from chem_persistence.worker.dashboard.views import views

HERE = Path(__file__).resolve().parent
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def utc(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def create_app(ctx: Context, settings: DashboardSettings, shown_redis_url: str) -> Flask:
    app = Flask(
        "chem_persistence.worker.dashboard",
        template_folder=str(HERE / "templates"),
        static_folder=str(HERE / "static"),
        static_url_path="/static",
    )
    # Flash messages live in a signed cookie; the key (and the form tokens') lasts as long
    # as the process: a restart only asks the operator to open a confirmation again.
    key = secrets.token_bytes(32)
    app.secret_key = key
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="chem_dashboard",
        MAX_CONTENT_LENGTH=64 * 1024,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.extensions["chem_dashboard"] = ctx
    app.extensions["chem_dashboard_tokens"] = Tokens(key)
    app.jinja_env.filters["utc"] = utc
    app.jinja_env.globals["rq_prefix"] = rqmount.URL_PREFIX
    app.jinja_env.globals["queue_name"] = ctx.queue.name
    app.jinja_env.globals["key_prefix"] = ctx.keys.prefix
    app.jinja_env.globals["shown_redis_url"] = shown_redis_url

    if settings.password is not None:
        auth.require_basic_auth(app, settings.username, settings.password)

    @app.before_request
    def refuse_cross_site() -> None:
        if request.method in UNSAFE_METHODS and not same_origin(
            request.headers.get("Origin") or request.headers.get("Referer"), request.host_url
        ):
            abort(403, "cross-site request refused (Origin is not this dashboard)")

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    app.register_blueprint(views)
    rqmount.mount(app, ctx.redis, shown_redis_url)
    return app
