"""Our pages: the overview (``/``), a flow's dead letters, the retry/discard confirmation and
its POST, the JSON of the overview, and ``/healthz``."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import redis.exceptions
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from chem_persistence.worker.dashboard.csrf import Tokens
from chem_persistence.worker.dashboard.data import SHOWN_FLOWS, Context, overview
from chem_persistence.worker.deadletters import StaleCommand

log = logging.getLogger(__name__)

views = Blueprint("chem", __name__)
ACTIONS = ("retry", "discard")
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def context() -> Context:
    ctx: Context = current_app.extensions["chem_dashboard"]
    return ctx


def tokens() -> Tokens:
    found: Tokens = current_app.extensions["chem_dashboard_tokens"]
    return found


def _flow(text: str) -> str:
    try:
        return str(UUID(text))
    except ValueError:
        abort(404)


@views.after_request
def no_store(response: Response) -> Response:
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@views.errorhandler(redis.exceptions.ConnectionError)
@views.errorhandler(redis.exceptions.TimeoutError)
def redis_away(exc: Exception) -> tuple[str, int]:
    log.warning("action=dashboard_redis_error error=%s", type(exc).__name__)
    return render_template("error.html", message=f"Redis does not answer ({exc})."), 503


@views.get("/healthz")
def healthz() -> tuple[str, int, dict[str, str]]:
    """200 ``ok`` when Redis answers, else 503 (unauthenticated: compose healthchecks)."""
    plain = {"Content-Type": "text/plain; charset=utf-8"}
    try:
        context().redis.ping()
    except REDIS_ERRORS as exc:
        return f"redis unreachable: {type(exc).__name__}\n", 503, plain
    return "ok\n", 200, plain


@views.get("/")
def index() -> str:
    return render_template("index.html", o=overview(context()), shown=SHOWN_FLOWS)


@views.get("/fragment/overview")
def overview_fragment() -> str:
    """The live part of ``/``, which the page's script swaps in every few seconds."""
    return render_template("overview.html", o=overview(context()), shown=SHOWN_FLOWS)


@views.get("/api/overview.json")
def overview_json() -> Response:
    return jsonify(overview(context()).as_dict())


def _parked(flow_id: str) -> Any:
    for parked in context().dead_letters.parked():
        if parked.flow_id == flow_id:
            return parked
    return None


@views.get("/flows/<flow>/dead-letters")
def dead_letters(flow: str) -> str:
    flow_id = _flow(flow)
    records = context().dead_letters.show(flow_id)
    return render_template(
        "dead_letters.html", flow_id=flow_id, parked=_parked(flow_id), records=records
    )


@views.get("/flows/<flow>/<action>")
def confirm(flow: str, action: str) -> str | BaseResponse:
    if action not in ACTIONS:
        abort(404)
    flow_id = _flow(flow)
    parked = _parked(flow_id)
    records = context().dead_letters.show(flow_id)
    if parked is None or not records:
        flash(f"flow {flow_id} has no dead letters (any more): nothing to {action}", "info")
        return redirect(url_for("chem.index"))
    return render_template(
        "confirm.html",
        action=action,
        flow_id=flow_id,
        parked=parked,
        records=records,
        token=tokens().issue(action, flow_id, parked.generation),
    )


@views.post("/flows/<flow>/<action>")
def act(flow: str, action: str) -> BaseResponse:
    if action not in ACTIONS:
        abort(404)
    flow_id = _flow(flow)
    generation_text = request.form.get("generation", "")
    token = request.form.get("token", "")
    if not generation_text.isdigit() or not tokens().check(
        token, action, flow_id, int(generation_text)
    ):
        abort(400, "the form's token is missing, wrong or expired: open the confirmation again")
    generation = int(generation_text)
    dlq = context().dead_letters
    try:
        if action == "retry":
            n = dlq.retry(flow_id, expected_generation=generation)
            flash(f"flow {flow_id}: {n} dead letter(s) put back in position order; resumed", "ok")
        else:
            n = dlq.discard(flow_id, expected_generation=generation)
            flash(f"flow {flow_id}: {n} dead letter(s) discarded (logged); flow resumed", "ok")
    except StaleCommand:
        flash(
            f"flow {flow_id}: its dead letters changed since you looked (another operator"
            f" acted?): nothing done; look again before you {action}",
            "error",
        )
    except LookupError:
        flash(f"flow {flow_id} has no dead letters (any more): nothing done", "error")
    return redirect(url_for("chem.index"), code=303)
