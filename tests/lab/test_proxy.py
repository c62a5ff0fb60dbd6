"""lab.proxy against the real Redis: a dropped reply comes after the server ran the command."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lab.proxy import ReplyLoss, TcpProxy

DEADLINE_S = 10.0


def wait_until(condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


@pytest.fixture
def proxy(redis_url: str) -> Iterator[TcpProxy]:
    parts = urlsplit(redis_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as started:
        yield started


def client_via(proxy: TcpProxy, redis_url: str) -> redis.Redis:
    db = int(urlsplit(redis_url).path.lstrip("/") or 0)
    # No retries: the test wants to see the connection error of the one command it sent.
    return redis.Redis(
        host="127.0.0.1", port=proxy.port, db=db, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )


def test_forwards_both_ways(proxy: TcpProxy, redis_url: str, redis_conn: redis.Redis) -> None:
    client = client_via(proxy, redis_url)
    try:
        assert client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        client.close()
    counters = proxy.counters()
    assert counters.connections_accepted == 1
    # SELECT (the db), SET, GET; redis-py may add a CLIENT SETINFO or two on connect.
    assert counters.requests_forwarded >= 3
    assert counters.replies_dropped == 0


def test_reply_dropped_after_the_server_ran_it(
    proxy: TcpProxy, redis_url: str, redis_conn: redis.Redis
) -> None:
    client = client_via(proxy, redis_url)
    try:
        client.ping()  # connect (and SELECT) without faults
        before = proxy.counters()
        proxy.set_reply_loss(ReplyLoss(1.0, seed=1))
        with pytest.raises(redis.ConnectionError):
            client.incr("counter")
        # The server ran it exactly once; the client never saw the reply.
        assert redis_conn.get("counter") == b"1"
        after = proxy.counters()
        assert after.requests_forwarded == before.requests_forwarded + 1
        assert after.replies_dropped == before.replies_dropped + 1
        wait_until(lambda: proxy.counters().connections_open == 0)
        proxy.set_reply_loss(None)
        assert client.incr("counter") == 2  # reconnects through the proxy
    finally:
        client.close()


def test_redis_py_retry_replays_a_command_whose_reply_was_lost(
    proxy: TcpProxy, redis_url: str, redis_conn: redis.Redis
) -> None:
    """Why every script must be idempotent: the default client re-sends after the cut."""
    db = int(urlsplit(redis_url).path.lstrip("/") or 0)
    client = redis.Redis(host="127.0.0.1", port=proxy.port, db=db, retry=Retry(NoBackoff(), 1))
    try:
        client.ping()
        # Drop exactly one reply: the first INCR's; the retry goes through.
        proxy.set_reply_loss(ReplyLoss(1.0, seed=1, limit=1))
        assert client.incr("counter") == 2  # ran twice: once lost, once retried
        assert redis_conn.get("counter") == b"2"
        assert proxy.counters().replies_dropped == 1
    finally:
        client.close()


def test_cut_all_closes_open_clients(proxy: TcpProxy, redis_url: str) -> None:
    raw = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(2)]
    client = client_via(proxy, redis_url)
    try:
        for sock in raw:
            sock.sendall(b"PING\r\n")
            assert sock.recv(64) == b"+PONG\r\n"
        client.ping()
        wait_until(lambda: proxy.counters().connections_open == 3)
        assert proxy.cut_all() == 3
        wait_until(lambda: proxy.counters().connections_open == 0)
        assert proxy.counters().connections_cut == 3
        for sock in raw:
            assert sock.recv(64) == b""  # the peer (the proxy) closed it
        # redis-py notices the dead socket before its next command and reconnects.
        assert client.ping()
        assert proxy.counters().connections_accepted == 4
    finally:
        for sock in raw:
            sock.close()
        client.close()


def test_pause_refuses_then_resume_serves(proxy: TcpProxy, redis_url: str) -> None:
    client = client_via(proxy, redis_url)
    try:
        client.ping()
        proxy.pause("refuse")
        with pytest.raises(redis.ConnectionError):
            client.ping()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
        proxy.resume()
        assert client.ping()
    finally:
        client.close()


def test_pause_blackhole_times_clients_out(proxy: TcpProxy, redis_url: str) -> None:
    db = int(urlsplit(redis_url).path.lstrip("/") or 0)
    client = redis.Redis(
        host="127.0.0.1", port=proxy.port, db=db, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    try:
        proxy.pause("blackhole")
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            client.ping()
        proxy.resume()
        assert client.ping()
    finally:
        client.close()


def test_bounded_connections_and_clean_stop(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379, max_connections=2)
    proxy.start()
    clients = [client_via(proxy, redis_url) for _ in range(3)]
    try:
        clients[0].ping()
        clients[1].ping()
        with pytest.raises(redis.ConnectionError):
            clients[2].ping()
        assert proxy.counters().connections_rejected >= 1
    finally:
        for client in clients:
            client.close()
        proxy.stop()
    assert proxy.counters().connections_open == 0
