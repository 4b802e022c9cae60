"""A TCP proxy in front of a store that injects faults beyond "connection refused".

The proxy runs its own event loop on a daemon thread; its methods are thread-safe and
synchronous, so a test on any loop (or none) drives it. Point a backend at
``proxy.port`` instead of the store's port; then set a fault:

==========  ===========================================================================
``pass``    forward both ways (the default)
``refuse``  stop listening (connect: refused) and reset every open connection: a store
            that is down
``stall``   accept connections and read what the client sends, never answer; on
            leaving the stall every connection that saw it is reset: a store that hangs
``slow``    forward, delaying every chunk of the store's replies by ``delay`` seconds
``drop``    forward the next matching command to the store, wait for its reply, then
            reset the client's connection without relaying it: the command ran, its
            reply is lost (``count`` times)
``error``   answer every complete command with ``reply`` (raw protocol bytes, e.g. a
            Redis ``-LOADING ...``) without forwarding it: a protocol-level injection
            for errors the store has no real mechanism to produce on demand
==========  ===========================================================================

Commands are recognised per protocol: Redis (RESP arrays and inline commands, so
``error`` answers each pipelined command once and ``drop`` can target ``EVALSHA``) and
PostgreSQL (``drop`` targets the first message a connection sends after start-up and
authentication, that is a statement). ``raw`` treats each chunk as one command.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Fault", "FaultProxy", "redis_commands"]

Match = Callable[[bytes], bool]


@dataclass(frozen=True)
class Fault:
    """What the proxy does now (see the module docstring)."""

    kind: str = "pass"
    delay: float = 0.0
    reply: bytes = b""
    count: int = 1
    #: drop: Redis command names, or words of a PostgreSQL statement, to target (empty: any)
    commands: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        """Validate the kind."""
        if self.kind not in ("pass", "refuse", "stall", "slow", "drop", "error"):
            raise ValueError(f"unknown fault kind {self.kind!r}")


def redis_commands(buffer: bytearray) -> list[tuple[str, bytes]]:
    """Remove every complete RESP command from ``buffer``: (upper-case name, raw bytes)."""
    out: list[tuple[str, bytes]] = []
    while buffer:
        if buffer[:1] != b"*":  # an inline command: one line
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            raw = bytes(buffer[: end + 2])
            name = raw.split(None, 1)[0].decode(errors="replace").upper() if raw.strip() else ""
            del buffer[: end + 2]
            out.append((name, raw))
            continue
        pos = buffer.find(b"\r\n")
        if pos < 0:
            break
        try:
            n = int(buffer[1:pos])
        except ValueError:
            raw = bytes(buffer)
            buffer.clear()
            out.append(("", raw))
            break
        cursor = pos + 2
        parts: list[bytes] = []
        complete = True
        for _ in range(max(n, 0)):
            if buffer[cursor : cursor + 1] != b"$":
                complete = False
                break
            end = buffer.find(b"\r\n", cursor)
            if end < 0:
                complete = False
                break
            size = int(buffer[cursor + 1 : end])
            start = end + 2
            if len(buffer) < start + size + 2:
                complete = False
                break
            parts.append(bytes(buffer[start : start + size]))
            cursor = start + size + 2
        if not complete:
            break
        raw = bytes(buffer[:cursor])
        del buffer[:cursor]
        out.append((parts[0].decode(errors="replace").upper() if parts else "", raw))
    return out


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    ready: bool = False  # postgres: start-up finished (the server sent ReadyForQuery)
    stalled: bool = False
    swallow: bool = False  # drop: replies are read from the store and thrown away
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    buffer: bytearray = field(default_factory=bytearray)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                transport = writer.transport
                with contextlib.suppress(Exception):
                    transport.abort()


class FaultProxy:
    """A loopback TCP proxy to ``upstream`` (host, port) with switchable faults."""

    def __init__(
        self, upstream: tuple[str, int], protocol: str = "raw", port: int = 0
    ) -> None:
        """Nothing listens until :meth:`start`."""
        if protocol not in ("redis", "postgres", "raw"):
            raise ValueError(f"unknown protocol {protocol!r}")
        self.upstream = upstream
        self.protocol = protocol
        self.port = port
        self._fault = Fault()
        self._drops_left = 0
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"ac-proxy-{upstream[1]}", daemon=True
        )
        self.dropped = 0  # replies dropped so far
        self.injected = 0  # error replies sent so far

    # -- control (any thread) ----------------------------------------------------------------
    def _call(self, coro: object, timeout: float = 10.0) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def start(self) -> int:
        """Start listening on 127.0.0.1 (``port``, or a free one); returns the port."""
        if not self._thread.is_alive():
            self._thread.start()
        self._call(self._listen())
        return self.port

    def url(self, url: str) -> str:
        """``url`` (a redis:// or postgresql:// URL) with host:port replaced by the proxy's."""
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{self.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    @property
    def fault(self) -> Fault:
        """The fault in force."""
        return self._fault

    def set(self, fault: Fault) -> None:
        """Switch to ``fault`` (takes effect for the next chunk of every connection)."""
        self._call(self._set(fault))

    @contextlib.contextmanager
    def injecting(self, fault: Fault) -> Iterator[FaultProxy]:
        """``fault`` inside the block, ``pass`` after it."""
        self.set(fault)
        try:
            yield self
        finally:
            self.set(Fault())

    def close(self) -> None:
        """Stop listening, reset every connection, stop the thread."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        """Start; closed on exit."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()

    # -- loop side ---------------------------------------------------------------------------
    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)

    async def _unlisten(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
        for conn in list(self._conns):
            conn.abort()

    async def _set(self, fault: Fault) -> None:
        old = self._fault
        self._fault = fault
        self._drops_left = fault.count if fault.kind == "drop" else 0
        if fault.kind == "refuse":
            await self._unlisten()
        elif self._server is None:
            await self._listen()
        if old.kind == "stall" and fault.kind != "stall":
            for conn in list(self._conns):
                if conn.stalled:
                    conn.abort()

    async def _shutdown(self) -> None:
        await self._unlisten()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # a connection we or the peer reset

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            if self._fault.kind == "stall":
                conn.stalled = True
            else:
                try:
                    up_reader, conn.upstream = await asyncio.wait_for(
                        asyncio.open_connection(*self.upstream), 5
                    )
                except (OSError, TimeoutError):
                    conn.abort()
                    return
            down = None
            if conn.upstream is not None:
                down = asyncio.create_task(self._downstream(conn, up_reader))
            try:
                await self._upstream(conn, reader)
            finally:
                if down is not None:
                    down.cancel()
                    with contextlib.suppress(BaseException):
                        await down
        finally:
            conn.abort()
            self._conns.discard(conn)

    async def _upstream(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Client -> store, one chunk at a time, through the fault in force."""
        while True:
            data = await reader.read(65536)
            if not data:
                return
            fault = self._fault
            if fault.kind == "stall" or conn.stalled or conn.upstream is None:
                conn.stalled = True
                continue  # swallowed; the connection is reset when the stall ends
            if fault.kind == "error":
                await self._answer_errors(conn, data, fault)
                continue
            if (
                fault.kind == "drop"
                and not conn.swallow
                and self._drops_left > 0
                and self._targets(conn, data, fault)
            ):
                self._drops_left -= 1
                conn.swallow = True
                asyncio.get_running_loop().create_task(self._drop_after_reply(conn))
            conn.upstream.write(data)
            await conn.upstream.drain()

    def _targets(self, conn: _Conn, data: bytes, fault: Fault) -> bool:
        if self.protocol == "postgres":
            # after start-up; ``commands``: words of the statement (UPDATE, COMMIT, ...)
            return conn.ready and (
                not fault.commands or any(c.encode() in data for c in fault.commands)
            )
        if self.protocol == "redis":
            buffer = bytearray(data)
            names = {name for name, _ in redis_commands(buffer)}
            return bool(names & fault.commands) if fault.commands else bool(names)
        return True

    async def _drop_after_reply(self, conn: _Conn) -> None:
        """Once the store has answered the command (into the void), reset the client.

        Client bytes keep flowing to the store meanwhile (a PostgreSQL statement may span
        several writes: Parse, Bind, Execute, Sync), replies are swallowed. The store's
        answer is complete at its ReadyForQuery (PostgreSQL) or first reply bytes (Redis).
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.answered.wait(), 3.0)
        self.dropped += 1
        conn.abort()

    async def _answer_errors(self, conn: _Conn, data: bytes, fault: Fault) -> None:
        if self.protocol == "redis":
            conn.buffer.extend(data)
            count = len(redis_commands(conn.buffer))
        else:
            count = 1
        for _ in range(count):
            conn.client.write(fault.reply)
            self.injected += 1
        await conn.client.drain()

    async def _downstream(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Store -> client, delayed under ``slow``, held under ``stall``."""
        while True:
            data = await reader.read(65536)
            if not data:
                conn.abort()
                return
            ready_for_query = b"Z\x00\x00\x00\x05" in data
            if self.protocol == "postgres" and not conn.ready and ready_for_query:
                conn.ready = True
            if conn.swallow:
                if ready_for_query or self.protocol != "postgres":
                    conn.answered.set()
                continue
            fault = self._fault
            if conn.stalled or fault.kind == "stall":
                conn.stalled = True
                continue
            if fault.kind == "slow" and fault.delay > 0:
                await asyncio.sleep(fault.delay)
            conn.client.write(data)
            await conn.client.drain()


def wait_port_closed(port: int, timeout: float = 5.0) -> bool:
    """True once nothing accepts on 127.0.0.1:``port`` (used after ``refuse``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            return True
        time.sleep(0.05)
    return False
