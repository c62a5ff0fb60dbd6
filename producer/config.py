"""Redis and queue settings shared by the producer and the workers, read from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from chem_persistence.domain.settings import InvalidSetting, read_int, read_text

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_QUEUE = "chem-ingest"
DEFAULT_KEY_PREFIX = "chem"
DEFAULT_MAX_ENVELOPE_BYTES = 1024 * 1024  # 1 MiB: larger payloads belong in an artifact store
DEFAULT_SHARDS = 1  # Redis key shards; every producer and worker must use the same number
DEFAULT_EMIT_RETRY_SECONDS = 30.0  # how long an emit retries a lost Redis connection
#: redis-py's own retries of a command after a connection error (0: off). Every script of the
#: protocol is safe to run twice, so they are on; the producer and the sweeps retry on top.
DEFAULT_REDIS_RETRIES = 3
REDIS_SOCKET_TIMEOUT_SECONDS = 10.0
REDIS_CONNECT_TIMEOUT_SECONDS = 5.0
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class QueueConfigError(InvalidSetting):
    """An environment variable with a value the queue side cannot use."""


@dataclass(frozen=True)
class QueueSettings:
    redis_url: str = DEFAULT_REDIS_URL
    queue_name: str = DEFAULT_QUEUE
    key_prefix: str = DEFAULT_KEY_PREFIX
    max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    shards: int = DEFAULT_SHARDS
    emit_retry_seconds: float = DEFAULT_EMIT_RETRY_SECONDS
    redis_retries: int = DEFAULT_REDIS_RETRIES

    def redis(self) -> Redis:
        """A client for ``redis_url`` with the configured command retries."""
        retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), self.redis_retries)
        # A black-holed connection must end in an error, not a wait for ever: every reply is
        # due within REDIS_SOCKET_TIMEOUT_SECONDS (a sweep's longest block is under a second).
        return Redis.from_url(
            self.redis_url,
            retry=retry,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
            socket_keepalive=True,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QueueSettings:
        env = os.environ if environ is None else environ
        url = read_text(env, "REDIS_URL", DEFAULT_REDIS_URL)
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise QueueConfigError(
                "REDIS_URL", f"{scheme}://...", "the scheme is not redis://, rediss:// or unix://"
            )
        prefix = read_text(env, "CHEM_KEY_PREFIX", DEFAULT_KEY_PREFIX)
        if not _PREFIX_RE.fullmatch(prefix):
            raise QueueConfigError(
                "CHEM_KEY_PREFIX", prefix, "must be 1-64 letters, digits, '_', '.' or '-'"
            )
        queue = read_text(env, "CHEM_QUEUE", DEFAULT_QUEUE)
        max_bytes = _int(env, "CHEM_MAX_ENVELOPE_BYTES", DEFAULT_MAX_ENVELOPE_BYTES, 1024, 2**31)
        shards = _int(env, "CHEM_SHARDS", DEFAULT_SHARDS, 1, 1024)
        retry = _int(env, "CHEM_EMIT_RETRY_SECONDS", int(DEFAULT_EMIT_RETRY_SECONDS), 0, 3600)
        retries = _int(env, "CHEM_REDIS_RETRIES", DEFAULT_REDIS_RETRIES, 0, 100)
        return cls(url, queue, prefix, max_bytes, shards, float(retry), retries)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    return read_int(env, name, default, minimum=minimum, maximum=maximum, error=QueueConfigError)
