"""HTTP basic auth for every page of the app, rq-dashboard's included, but ``GET /healthz``."""

from __future__ import annotations

import hmac

from flask import Flask, Response, request

REALM = "chem-persistence dashboard"
#: Endpoints anyone may call: the compose healthcheck has no credentials.
PUBLIC_ENDPOINTS = frozenset({"chem.healthz"})


def credentials_match(username: str, password: str, expected: tuple[str, str]) -> bool:
    """Both compared in constant time, and both always compared (no early exit that would
    tell a right username from a wrong one)."""
    user_ok = hmac.compare_digest(username.encode(), expected[0].encode())
    password_ok = hmac.compare_digest(password.encode(), expected[1].encode())
    return user_ok & password_ok


def challenge() -> Response:
    return Response(
        "authentication required\n",
        401,
        {
            "WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"',
            "Cache-Control": "no-store",
        },
        mimetype="text/plain",
    )


def require_basic_auth(app: Flask, username: str, password: str) -> None:
    """Refuse every request without the right credentials, before any view runs."""
    expected = (username, password)

    @app.before_request
    def check() -> Response | None:
        if request.endpoint in PUBLIC_ENDPOINTS and request.method in ("GET", "HEAD"):
            return None
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return challenge()
        if not credentials_match(auth.username or "", auth.password or "", expected):
            return challenge()
        return None
