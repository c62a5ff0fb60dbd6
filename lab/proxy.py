"""A small TCP proxy on 127.0.0.1 for tests and chaos: lost replies, cut connections, outages.

``TcpProxy(target_host, target_port)`` listens on a free local port and forwards every byte both
ways, one thread per connection (at most ``max_connections``; more are closed at once) plus one
accept thread. Faults, all at run time:

- ``ReplyLoss(p)``: for each chunk a client sends, with probability ``p``, the chunk is forwarded,
  the proxy waits until the server's first reply bytes arrive (so the server HAS run the
  command), drops them and closes both sides. The client sees a connection error for a command
  that took effect: the "reply lost after Redis ran it" fault.
- ``cut_all()``: close every open connection now.
- ``pause("refuse")``: new connections are refused (the listening socket is closed) and open ones
  are cut: the server looks down while the proxy object stays up. ``pause("blackhole")``: new
  connections are accepted and then never answered (clients time out). ``resume()`` undoes both.

Counters (``counters()``): connections accepted, requests forwarded, replies dropped, connections
cut. The proxy is a context manager; ``stop()`` closes everything and joins its threads.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

LOCALHOST = "127.0.0.1"
CHUNK = 65536
POLL_S = 0.2
PauseMode = Literal["refuse", "blackhole"]


@dataclass(frozen=True)
class ReplyLoss:
    """Drop the reply to a client chunk with ``probability`` (after the server answered it)."""

    probability: float
    #: how long to wait for the server's reply before cutting anyway (a blocking command).
    reply_wait_s: float = 10.0
    seed: int | None = None
    #: drop at most this many replies (then forward everything), None for no limit.
    limit: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], not {self.probability}")


@dataclass(frozen=True)
class ProxyCounters:
    connections_accepted: int
    connections_open: int
    connections_rejected: int
    requests_forwarded: int
    replies_dropped: int
    connections_cut: int


class _Link:
    """One client connection and its server connection; closed once, from any thread."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self._lock = threading.Lock()
        self.closed = False

    def close(self) -> bool:
        """Close both sides; True if this call closed them."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return True


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``target_host:target_port``, with faults on demand."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        reply_loss: ReplyLoss | None = None,
        max_connections: int = 64,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._reply_loss = reply_loss
        self._rng = random.Random(reply_loss.seed if reply_loss else None)
        self._loss_budget = reply_loss.limit if reply_loss else None
        self._links: dict[_Link, threading.Thread] = {}
        self._parked: list[socket.socket] = []
        self._pause: PauseMode | None = None
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self.port = 0
        self._accepted = 0
        self._rejected = 0
        self._forwarded = 0
        self._dropped = 0
        self._cut = 0

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url_host_port(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def start(self) -> TcpProxy:
        if self._accept_thread is not None:
            raise RuntimeError("proxy already started")
        self._listener = self._listen(self.port)
        self.port = int(self._listener.getsockname()[1])
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"proxy-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout_s)
        self.cut_all()
        self._close_parked()
        with self._lock:
            threads = list(self._links.values())
        for thread in threads:
            thread.join(timeout_s)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------------

    def set_reply_loss(self, reply_loss: ReplyLoss | None) -> None:
        with self._lock:
            self._reply_loss = reply_loss
            self._loss_budget = reply_loss.limit if reply_loss else None
            if reply_loss is not None and reply_loss.seed is not None:
                self._rng = random.Random(reply_loss.seed)

    def cut_all(self) -> int:
        """Close every open connection now; return how many were closed."""
        with self._lock:
            links = list(self._links)
        closed = sum(1 for link in links if link.close())
        with self._lock:
            self._cut += closed
        return closed

    def pause(self, mode: PauseMode = "refuse", *, cut_open: bool = True) -> None:
        """Make the server look down: refuse (or black-hole) new connections, cut open ones."""
        if mode not in ("refuse", "blackhole"):
            raise ValueError(f"unknown pause mode {mode!r}")
        with self._lock:
            self._pause = mode
            listener = self._listener if mode == "refuse" else None
            if listener is not None:
                self._listener = None
        if listener is not None:
            listener.close()
        if cut_open:
            self.cut_all()

    def resume(self) -> None:
        """Accept and forward new connections again."""
        with self._lock:
            was, self._pause = self._pause, None
            need_listener = self._listener is None and not self._stopping.is_set()
        if need_listener and was == "refuse":
            listener = self._listen(self.port)
            with self._lock:
                self._listener = listener
        self._close_parked()

    @property
    def paused(self) -> PauseMode | None:
        return self._pause

    def counters(self) -> ProxyCounters:
        with self._lock:
            return ProxyCounters(
                connections_accepted=self._accepted,
                connections_open=sum(1 for link in self._links if not link.closed),
                connections_rejected=self._rejected,
                requests_forwarded=self._forwarded,
                replies_dropped=self._dropped,
                connections_cut=self._cut,
            )

    # --- internals ---------------------------------------------------------------------------

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOCALHOST, port))
        listener.listen(128)
        listener.settimeout(POLL_S)
        return listener

    def _close_parked(self) -> None:
        with self._lock:
            parked, self._parked = self._parked, []
        for sock in parked:
            sock.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            listener = self._listener
            if listener is None:  # paused in "refuse" mode
                self._stopping.wait(POLL_S)
                continue
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by pause() or stop()
                continue
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        with self._lock:
            pause = self._pause
            full = sum(1 for link in self._links if not link.closed) >= self.max_connections
            if pause == "blackhole" and len(self._parked) < self.max_connections:
                self._parked.append(client)  # accepted, never answered (closed on resume)
                return
            if pause == "refuse" or full or self._stopping.is_set():
                self._rejected += 1
                client.close()
                return
        try:
            server = socket.create_connection(self.target, timeout=self.connect_timeout_s)
        except OSError:
            with self._lock:
                self._rejected += 1
            client.close()
            return
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
        link = _Link(client, server)
        thread = threading.Thread(
            target=self._pump, args=(link,), name=f"proxy-link-{self.port}", daemon=True
        )
        with self._lock:
            self._accepted += 1
            self._links[link] = thread
        thread.start()

    def _should_drop(self) -> ReplyLoss | None:
        with self._lock:
            self._forwarded += 1
            loss = self._reply_loss
            if loss is None or loss.probability <= 0.0 or self._loss_budget == 0:
                return None
            if self._rng.random() >= loss.probability:
                return None
            if self._loss_budget is not None:
                self._loss_budget -= 1
            return loss

    def _pump(self, link: _Link) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(link.client, selectors.EVENT_READ, link.server)
            sel.register(link.server, selectors.EVENT_READ, link.client)
            while not link.closed and not self._stopping.is_set():
                for key, _ in sel.select(POLL_S):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    data = source.recv(CHUNK)
                    if not data:
                        return
                    if source is link.client:
                        loss = self._should_drop()
                        link.server.sendall(data)
                        if loss is not None:
                            self._drop_reply(link, loss)
                            return
                    else:
                        link.client.sendall(data)
        except (OSError, ValueError):  # a side closed (cut_all, stop, peer reset)
            return
        finally:
            sel.close()
            link.close()
            with self._lock:
                self._links.pop(link, None)

    def _drop_reply(self, link: _Link, loss: ReplyLoss) -> None:
        """Wait for the server's reply (it ran the command), discard it, close both sides."""
        link.server.settimeout(loss.reply_wait_s)
        try:
            answered = bool(link.server.recv(CHUNK))
        except OSError:
            answered = False
        if link.close():
            with self._lock:
                if answered:
                    self._dropped += 1
                else:
                    self._cut += 1
