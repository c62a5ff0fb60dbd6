"""Helpers of the least-privilege and secrets tests: the real command as a process, private
Redis servers (with a password, with TLS), URLs with another user or a password.

Every process started here is stopped by the code that started it, by its own handle.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import redis

from chem_persistence.domain.engine import FlowEngine
from chem_persistence.domain.examples import example_flow
from chem_persistence.producer import Producer, QueuedEventStore, QueueSettings
from lab.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 60.0
START_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0
#: The project's variables a developer's shell may carry: each test sets what it needs.
PROJECT_VARIABLES = (
    "DATABASE_URL",
    "DATABASE_MIN_CONNECTIONS",
    "DATABASE_MAX_CONNECTIONS",
    "REDIS_URL",
    "CHEM_QUEUE",
    "CHEM_KEY_PREFIX",
    "CHEM_BATCH_SIZE",
    "CHEM_METRICS_PORT",
    "CHEM_NO_ARTIFACT_INSERT",
    "CHEM_SHARDS",
    "CHEM_CLAIM_FLOWS",
    "CHEM_LEASE_TTL_MS",
    "CHEM_SWEEP_LINGER_SECONDS",
    "CHEM_CHECK_INTERVAL_SECONDS",
)


def with_user(url: str, user: str, password: str | None = None) -> str:
    """``url`` logging in as ``user`` (with ``password`` when given)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (its user kept, ``postgres`` if it had none)."""
    parts = urlsplit(url)
    return with_user(url, parts.username or "postgres", password)


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    auth, _, host = parts.netloc.rpartition("@")
    hostname = host.rsplit(":", 1)[0]
    netloc = f"{auth}@{hostname}:{port}" if auth else f"{hostname}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Env:
    """The environment of one test's CLI calls and worker processes."""

    database_url: str
    redis_url: str
    queue: str
    prefix: str

    @classmethod
    def new(cls, database_url: str, redis_url: str, tag: str) -> Env:
        unique = f"chemsec-{tag}-{uuid.uuid4().hex[:10]}"
        return cls(database_url, redis_url, unique, unique)

    @property
    def settings(self) -> QueueSettings:
        return QueueSettings(self.redis_url, self.queue, self.prefix)

    def variables(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "DATABASE_MIN_CONNECTIONS": "1",
                "DATABASE_MAX_CONNECTIONS": "4",
                "REDIS_URL": self.redis_url,
                "CHEM_QUEUE": self.queue,
                "CHEM_KEY_PREFIX": self.prefix,
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(overrides)
        return env


def run_cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``chem-persistence ARGS`` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "chem_persistence.worker.cli", *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@contextmanager
def worker_process(
    env: Mapping[str, str], log: Path, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``chem-persistence -v worker ARGS`` process logging to ``log``; stopped on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chem_persistence.worker.cli", "-v", "worker", *args],
            env=dict(env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_burst_worker(env: Mapping[str, str], log: Path) -> int:
    """``chem-persistence -v worker --burst``: sweep what is queued, then exit; its exit code."""
    with worker_process(env, log, "--burst") as proc:
        try:
            return proc.wait(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"burst worker still running:\n{log.read_text()}") from None


def emit_example_flows(settings: QueueSettings, count: int) -> QueuedEventStore:
    """Run ``count`` example flows through the engine and the real producer."""
    client = redis.Redis.from_url(settings.redis_url)
    store = QueuedEventStore(Producer(client, settings))
    engine = FlowEngine(store)
    for seed in range(1, count + 1):
        engine.run(uuid.uuid4(), example_flow(seed))
    return store


def emitted_flows(store: QueuedEventStore) -> list[uuid.UUID]:
    return store.memory.flow_ids()


# --- private Redis servers --------------------------------------------------------------------


@dataclass(frozen=True)
class RedisServer:
    url: str
    port: int
    log: Path


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    files = {name: directory / f"{name}" for name in ("ca.key", "ca.crt", "server.key")}
    files["server.csr"] = directory / "server.csr"
    files["server.crt"] = directory / "server.crt"
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def openssl(*args: str | Path) -> None:
        subprocess.run(
            ["openssl", *map(str, args)], check=True, capture_output=True, timeout=CLI_TIMEOUT_S
        )

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-keyout", files["ca.key"], "-out", files["ca.crt"], "-subj", "/CN=chem-test-ca",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", files["server.key"],
        "-out", files["server.csr"], "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", files["server.csr"], "-CA", files["ca.crt"],
        "-CAkey", files["ca.key"], "-CAcreateserial", "-days", "1",
        "-out", files["server.crt"], "-extfile", ext,
    )  # fmt: skip
    return files


def redis_tls_unsupported(directory: Path) -> str | None:
    """Why the ``redis-server`` on PATH cannot serve TLS, or None when it can.

    Asked explicitly, not guessed from an error: a plain private server of that binary is
    started and asked ``CONFIG GET tls-port``; a build without TLS does not know the setting.
    """
    with redis_server(directory, secrets.token_hex(8)) as server:
        client = redis.Redis.from_url(server.url)
        try:
            known = client.config_get("tls-port")
            version = client.info("server").get("redis_version")
        finally:
            client.close()
    if "tls-port" not in known:
        return f"redis-server {version} was built without TLS (it has no tls-port setting)"
    return None


@contextmanager
def redis_server(directory: Path, password: str, *, tls: bool = False) -> Iterator[RedisServer]:
    """A private ``redis-server`` requiring ``password`` (over TLS when asked), no persistence."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        "redis-server",
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--requirepass", password,
    ]  # fmt: skip
    query = ""
    if tls:
        files = make_tls_files(directory)
        args += [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(files["server.crt"]),
            "--tls-key-file", str(files["server.key"]),
            "--tls-ca-cert-file", str(files["ca.crt"]),
            "--tls-auth-clients", "no",
        ]  # fmt: skip
        query = f"?ssl_ca_certs={quote(str(files['ca.crt']), safe='/')}"
    else:
        args += ["--port", str(port)]
    scheme = "rediss" if tls else "redis"
    url = f"{scheme}://:{quote(password, safe='')}@127.0.0.1:{port}/0{query}"
    log = directory / "redis.log"
    with log.open("wb") as out:
        # The password travels on the command line here: this server is the test's own.
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {proc.returncode}:\n{log.read_text()}")
            client = redis.Redis.from_url(url, socket_connect_timeout=1)
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()
        yield RedisServer(url, port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
