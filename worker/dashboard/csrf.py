"""Form tokens against cross-site requests: an HMAC of the action, the flow, the dead letters'
generation the operator confirmed, and the time it was issued, under a key of this process.

A page on another site cannot read our confirmation page, so it cannot know the token; the
browser's stored basic-auth credentials alone are not enough to act. A token names one action
on one flow at one generation and expires after ``TOKEN_TTL_SECONDS``.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TOKEN_TTL_SECONDS = 3600


class Tokens:
    def __init__(self, key: bytes, ttl_seconds: float = TOKEN_TTL_SECONDS) -> None:
        self._key = key
        self.ttl_seconds = ttl_seconds

    def issue(self, action: str, flow_id: str, generation: int, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self._mac(action, flow_id, generation, issued)}"

    def check(
        self, token: str, action: str, flow_id: str, generation: int, now: float | None = None
    ) -> bool:
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit() or not mac:
            return False
        issued = int(issued_text)
        age = (time.time() if now is None else now) - issued
        if not 0 <= age <= self.ttl_seconds:
            return False
        return hmac.compare_digest(mac, self._mac(action, flow_id, generation, issued))

    def _mac(self, action: str, flow_id: str, generation: int, issued: int) -> str:
        message = f"{action}\n{flow_id}\n{generation}\n{issued}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


def same_origin(origin_or_referer: str | None, host_url: str) -> bool:
    """Whether an unsafe request's ``Origin`` (else ``Referer``) is this very site.

    Browsers send ``Origin`` with every POST; a cross-site form or script gets another one
    (or ``null``). rq-dashboard's own buttons (delete, requeue, empty) carry no token, so
    every POST of the app is checked this way too.
    """
    if not origin_or_referer:
        return False
    own = host_url.rstrip("/")
    return origin_or_referer == own or origin_or_referer.startswith(own + "/")
