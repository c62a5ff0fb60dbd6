"""Serve the app with waitress until SIGTERM or Ctrl-C; start-up errors name the setting."""

from __future__ import annotations

import errno
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from redis import Redis
from waitress.server import create_server

from chem_persistence.eventlog.config import redact_url
from chem_persistence.producer.config import QueueSettings
from chem_persistence.producer.jobs import ingest_queue
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker.dashboard.app import create_app
from chem_persistence.worker.dashboard.data import Context
from chem_persistence.worker.dashboard.rate import Sampler, StoredRate
from chem_persistence.worker.dashboard.rqmount import URL_PREFIX
from chem_persistence.worker.dashboard.settings import (
    ENV_BIND,
    ENV_PORT,
    DashboardConfigError,
    DashboardSettings,
)
from chem_persistence.worker.deadletters import DeadLetters
from chem_persistence.worker.runtime import starter
from chem_persistence.worker.version import __version__

#: Threads answering requests (the page polls every few seconds; rq-dashboard every 2.5 s).
THREADS = 4


class _Stop(KeyboardInterrupt):
    """Raised by our SIGTERM/SIGINT handler inside waitress's loop, which then closes."""


def redis_client(settings: QueueSettings) -> Redis:
    try:
        client = settings.redis()
    except ValueError as exc:  # a URL redis-py cannot parse (a port that is no number...)
        raise DashboardConfigError(
            "REDIS_URL", redact_url(settings.redis_url), f"is not a usable URL ({exc})"
        ) from None
    client.ping()  # unreachable: redis' ConnectionError, explained by the command
    return client


def listen(app: Any, settings: DashboardSettings, bind_given: bool, port_given: bool) -> Any:
    """The waitress server, bound; a busy port or an unusable address names its setting."""
    port_name = "--port" if port_given else ENV_PORT
    bind_name = "--bind" if bind_given else ENV_BIND
    try:
        return create_server(
            app,
            host=settings.bind,
            port=settings.port,
            threads=THREADS,
            ident="chem-persistence",
            clear_untrusted_proxy_headers=True,
        )
    except ValueError as exc:  # waitress: a host it cannot resolve
        raise DashboardConfigError(
            bind_name, settings.bind, f"is not an address of this host ({exc})"
        ) from None
    except socket.gaierror as exc:
        raise DashboardConfigError(
            bind_name, settings.bind, f"is not an address of this host ({exc.strerror})"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise DashboardConfigError(
                port_name,
                settings.port,
                f"port {settings.port} on {settings.bind} is already in use; choose another",
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise DashboardConfigError(
                bind_name, settings.bind, "is not an address of this host"
            ) from None
        if exc.errno == errno.EACCES:
            raise DashboardConfigError(
                port_name, settings.port, "needs privileges to bind (use a port above 1023)"
            ) from None
        raise


@contextmanager
def stop_on_signals(stopped: list[str]) -> Iterator[None]:
    """SIGTERM and SIGINT end waitress's loop (it closes its sockets and threads)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        stopped.append(signal.Signals(signum).name)
        raise _Stop

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(bind: str | None = None, port: int | None = None, no_auth: bool = False) -> int:
    settings = DashboardSettings.from_env(no_auth=no_auth, bind=bind, port=port)
    queue_settings = QueueSettings.from_env()
    redis = redis_client(queue_settings)
    queue = ingest_queue(redis, queue_settings.queue_name)
    keys = Keys(queue_settings.key_prefix, queue_settings.shards)
    dead_letters = DeadLetters(redis, keys, Scripts.register(redis), starter(queue))
    sampler = Sampler(queue, StoredRate())
    shown_url = redact_url(queue_settings.redis_url)
    app = create_app(Context(redis, keys, queue, dead_letters, sampler), settings, shown_url)
    server = listen(app, settings, bind is not None, port is not None)
    if not settings.auth:
        print(
            "chem-persistence dashboard: WARNING: --no-auth: anyone who can reach"
            f" {settings.bind}:{settings.port} can see and act on the dead letters",
            file=sys.stderr,
            flush=True,
        )
    host, real_port = server.effective_host, server.effective_port
    print(
        f"chem-persistence dashboard {__version__} on http://{host}:{real_port}/"
        f" (rq-dashboard at {URL_PREFIX}/; auth: "
        f"{'basic, user ' + settings.username if settings.auth else 'OFF'});"
        f" Redis {shown_url}, queue {queue.name}, key prefix {keys.prefix},"
        f" shards {keys.shards}",
        flush=True,
    )
    sampler.start()
    stopped: list[str] = []
    try:
        if threading.current_thread() is threading.main_thread():
            with stop_on_signals(stopped):
                server.run()
        else:  # pragma: no cover - signals can only be handled in the main thread
            server.run()
    finally:
        sampler.stop()
        server.close()
        redis.close()
    print(
        f"chem-persistence dashboard: stopped ({stopped[0] if stopped else 'closed'})", flush=True
    )
    return 0
