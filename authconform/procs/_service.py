"""Service handles: a store or server we can start, stop, kill, pause and restart.

Every handle offers the same verbs (:class:`Service`); what a provider cannot do raises
:class:`Unsupported` with the reason (an external store cannot be SIGKILLed by us).

==============  ==============================================================
``start()``     start and wait until ready (protocol probe, see ``_readiness``)
``stop()``      graceful: SIGTERM (PostgreSQL: SIGINT, its "fast" shutdown, which
                checkpoints; SIGTERM is its "smart" mode that waits for every client)
``kill()``      SIGKILL to the whole process group: a crash, nothing flushed
``pause()``     SIGSTOP to the group: the port still accepts, nothing answers
``resume()``    SIGCONT
``restart()``   stop (or kill) and start; returns seconds from start to ready
``stopped()``   context: stopped (or killed) inside the block, started after it
==============  ==============================================================

``last_ready`` is the seconds the last start took to become ready (restart-to-ready).
"""

from __future__ import annotations

import abc
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from authconform._net import free_loopback_port
from authconform.procs._groups import descendants, own_dir, signal_tree, spawn, stop_group
from authconform.procs._readiness import (
    Readiness,
    http_metadata_probe,
    postgres_probe,
    redis_probe,
)

__all__ = [
    "ExternalService",
    "LocalPostgres",
    "LocalRedis",
    "LocalServer",
    "Service",
    "Unavailable",
    "Unsupported",
    "postgres_bindir",
]


class Unsupported(RuntimeError):
    """The handle cannot do that (the message says why)."""


class Unavailable(RuntimeError):
    """No provider could give the service; the message is an ``unavailable:`` sentence."""


@runtime_checkable
class Service(Protocol):
    """A store or server under our control (see the module docstring)."""

    kind: str
    provider: str
    can_kill: bool
    can_pause: bool
    last_ready: float

    @property
    def url(self) -> str:
        """Where clients reach it."""
        ...

    @property
    def data_dir(self) -> Path | None:
        """Its data directory, if we know it."""
        ...

    def start(self) -> None:
        """Start and wait until ready."""
        ...

    def stop(self) -> None:
        """Graceful stop."""
        ...

    def kill(self) -> None:
        """SIGKILL, nothing flushed."""
        ...

    def pause(self) -> None:
        """SIGSTOP."""
        ...

    def resume(self) -> None:
        """SIGCONT."""
        ...

    def restart(self, *, kill: bool = False) -> float:
        """Stop (or kill) and start; seconds from start to ready."""
        ...

    def stopped(self, *, kill: bool = False) -> contextlib.AbstractContextManager[None]:
        """Stopped inside the block, started after it."""
        ...

    def close(self) -> None:
        """Stop for good and remove what we created."""
        ...


class _Base(abc.ABC):
    kind = "service"
    provider = "local"
    can_kill = True
    can_pause = True
    last_ready = 0.0

    @abc.abstractmethod
    def start(self) -> None:
        """Each kind of service says how."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Each kind of service says how."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Each kind of service says how."""

    def restart(self, *, kill: bool = False) -> float:
        """Stop (or kill) and start again; returns the seconds to ready."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()
        return self.last_ready

    @contextlib.contextmanager
    def stopped(self, *, kill: bool = False) -> Iterator[None]:
        """Stopped (or killed) inside the block; started (and ready) after it."""
        if kill:
            self.kill()
        else:
            self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> _Base:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None:
        """Each kind of service says how."""


class _LocalProcess(_Base):
    """A process we start from a binary in a temp dir we own, on a fixed loopback port."""

    stop_signal = signal.SIGTERM
    stop_grace = 30.0

    def __init__(self, workdir: Path, port: int | None = None, user: str | None = None) -> None:
        self.workdir = workdir
        own_dir(workdir)
        self.port = port or free_loopback_port()
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{self.kind}.log"
        self.starts = 0

    @property
    def data_dir(self) -> Path | None:
        return self.workdir

    @abc.abstractmethod
    def argv(self) -> list[str]:
        """Each kind of service says how."""

    @abc.abstractmethod
    def readiness(self) -> Readiness:
        """Each kind of service says how."""

    @property
    def running(self) -> bool:
        """True while the process runs (stopped by SIGSTOP counts as running)."""
        return self.proc is not None and self.proc.poll() is None

    def env(self) -> dict[str, str] | None:
        """The process environment (None: ours)."""
        return None

    def start(self) -> None:
        """Start the process and wait for its protocol probe."""
        if self.running:
            return
        started = time.monotonic()
        self.proc = spawn(
            self.argv(), log=self.log, user=self.user, cwd=str(self.workdir), env=self.env()
        )
        self.starts += 1
        proc = self.proc

        def alive() -> str | None:
            if proc.poll() is None:
                return None
            return f"exited with {proc.returncode}; log {self.log}: {self._log_tail()}"

        try:
            self.readiness().wait(alive=alive)
        except BaseException:
            self.kill()
            raise
        self.last_ready = time.monotonic() - started

    def _log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log.read_text("utf-8", "replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])[-800:]

    def _end(self, sig: int, grace: float) -> None:
        """Signal, wait, SIGKILL the group; then SIGKILL descendants that left it."""
        if self.proc is None:
            return
        tree = descendants(self.proc.pid) if self.proc.poll() is None else []
        stop_group(self.proc, sig, grace)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while tree and time.monotonic() < deadline:
            tree = [p for p in tree if _alive(p)]
            time.sleep(0.02)

    def stop(self) -> None:
        """Graceful stop (``stop_signal``), SIGKILL after ``stop_grace`` seconds."""
        self.resume()
        self._end(self.stop_signal, self.stop_grace)

    def kill(self) -> None:
        """SIGKILL the process and every descendant at once (a crash: nothing flushed)."""
        if self.proc is not None and self.proc.poll() is None:
            signal_tree(self.proc, signal.SIGKILL)
        self._end(signal.SIGKILL, 10.0)

    def pause(self) -> None:
        """SIGSTOP the process and its descendants: the kernel accepts, nothing answers."""
        if self.proc is not None:
            signal_tree(self.proc, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the process and its descendants."""
        if self.proc is not None:
            signal_tree(self.proc, signal.SIGCONT)

    def close(self) -> None:
        """Stop if running and remove the temp dir."""
        if self.proc is not None:
            self.resume()
            self._end(self.stop_signal, 5.0)
        own_dir(self.workdir, remove=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


class LocalRedis(_LocalProcess):
    """``redis-server`` on 127.0.0.1:PORT with its own ``--dir``.

    ``config`` holds redis.conf directives given on the command line, e.g.
    ``{"appendonly": "yes", "appendfsync": "always"}``; the default keeps nothing on
    disk (``save ""``, ``appendonly no``). :meth:`configure` changes it for the next start.
    """

    kind = "redis"

    def __init__(
        self,
        config: Mapping[str, str] | None = None,
        *,
        workdir: Path | None = None,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        """Nothing starts until :meth:`start`."""
        found = binary or shutil.which("redis-server")
        if found is None:
            raise Unavailable(
                "unavailable: no redis-server on PATH (install the redis-server package, "
                "or give a store with --authconform-redis-url and --authconform-restart-cmd)"
            )
        self.binary = found
        super().__init__(workdir or Path(tempfile.mkdtemp(prefix="authconform-redis-")), port)
        self.config: dict[str, str] = {"save": "", "appendonly": "no"}
        self.config.update(config or {})

    def configure(self, **config: str) -> None:
        """Change directives for the next start (names with ``_`` for ``-``)."""
        self.config.update({k.replace("_", "-"): v for k, v in config.items()})

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        """The redis-server command line."""
        argv = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        for name, value in self.config.items():
            argv += [f"--{name}", *value.split(" ")] if name == "replicaof" else [
                f"--{name}", value]
        return argv

    def readiness(self) -> Readiness:
        """PING -> PONG (LOADING while the AOF is read is not ready)."""
        return Readiness(redis_probe("127.0.0.1", self.port), f"redis-server on port {self.port}")


def postgres_bindir() -> Path | None:
    """Where initdb and postgres live: $AUTHCONFORM_PG_BINDIR, Debian's newest, or PATH."""
    env = os.environ.get("AUTHCONFORM_PG_BINDIR")
    if env:
        return Path(env)
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if (p / "bin" / "initdb").exists()),
            key=lambda p: [int(x) if x.isdigit() else 0 for x in p.name.split(".")],
        )
        if versions:
            return versions[-1] / "bin"
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _postgres_user() -> str | None:
    """The unprivileged user to run PostgreSQL as when we are root (None: run as us)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("AUTHCONFORM_PG_USER", "postgres")
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise Unavailable(
            f"unavailable: PostgreSQL refuses to run as root and there is no user {name!r} "
            "to run it as; create one or set AUTHCONFORM_PG_USER"
        ) from None
    return name


class LocalPostgres(_LocalProcess):
    """A PostgreSQL cluster of our own: ``initdb`` once, then ``postgres -D`` in the foreground.

    As root, both run as an unprivileged user (``postgres``, or $AUTHCONFORM_PG_USER) in a
    temp dir that user owns. We run the postmaster ourselves (what ``pg_ctl start`` does)
    so that the handle holds its pid and process group: ``kill()`` takes the postmaster
    and every backend down at once, as a crash would. ``settings`` are ``-c`` options,
    e.g. ``{"synchronous_commit": "off"}``; :meth:`configure` changes them for the next start.
    """

    kind = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: disconnect clients, checkpoint, exit

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
    ) -> None:
        """Find the binaries and the user; nothing runs until :meth:`start`."""
        bindir = postgres_bindir()
        if bindir is None or not (bindir / "initdb").exists():
            raise Unavailable(
                "unavailable: no PostgreSQL binaries (looked in $AUTHCONFORM_PG_BINDIR, "
                "/usr/lib/postgresql/*/bin and PATH for initdb); install postgresql"
            )
        self.bindir = bindir
        user = _postgres_user()
        workdir = Path(tempfile.mkdtemp(prefix="authconform-pg-"))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
        workdir.chmod(0o700)
        super().__init__(workdir, port, user)
        self.settings: dict[str, str] = {
            "fsync": "on",
            "synchronous_commit": "on",
            "shared_buffers": "32MB",
            "max_connections": "60",
            "wal_writer_delay": "200ms",
        }
        self.settings.update(settings or {})
        self._initialised = False

    def configure(self, **settings: str) -> None:
        """Change ``-c`` settings for the next start."""
        self.settings.update(settings)

    @property
    def pgdata(self) -> Path:
        """The cluster's data directory."""
        return self.workdir / "data"

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres`` (trust auth)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _initdb(self) -> None:
        log = self.workdir / "initdb.log"
        proc = spawn(
            [str(self.bindir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            log=log, user=self.user, cwd=str(self.workdir),
        )  # fmt: skip
        try:
            code = proc.wait(180)
        except subprocess.TimeoutExpired:
            stop_group(proc, signal.SIGKILL)
            raise Unavailable("unavailable: initdb did not finish within 180 s") from None
        finally:
            stop_group(proc, signal.SIGKILL, 1.0)
        if code != 0:
            tail = log.read_text("utf-8", "replace").strip().splitlines()[-3:]
            raise Unavailable(f"unavailable: initdb failed ({code}): {' | '.join(tail)}")
        self._initialised = True

    def argv(self) -> list[str]:
        """The postmaster's command line."""
        argv = [
            str(self.bindir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.workdir}",
            "-c", "logging_collector=off",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def start(self) -> None:
        """Initdb on first start, then the postmaster."""
        if not self._initialised:
            self._initdb()
        super().start()

    def readiness(self) -> Readiness:
        """``SELECT 1`` (refused during crash recovery)."""
        return Readiness(
            postgres_probe(self.url), f"postgres on port {self.port}", timeout=60.0,
            interval=0.1,
        )


class LocalServer(_LocalProcess):
    """``authconform serve`` on a fixed loopback port, so a restart keeps URL and issuer.

    ``backend`` is what ``serve --backend`` takes (a name or a store URL).
    """

    kind = "server"

    def __init__(
        self,
        backend: str,
        namespace: str,
        *,
        workdir: Path | None = None,
        port: int | None = None,
        extra: list[str] | None = None,
    ) -> None:
        """Nothing starts until :meth:`start`."""
        super().__init__(workdir or Path(tempfile.mkdtemp(prefix="authconform-serve-")), port)
        self.backend = backend
        self.namespace = namespace
        self.extra = list(extra or [])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        """``python -m authconform.cli serve ...``."""
        return [
            sys.executable, "-m", "authconform.cli", "serve",
            "--backend", self.backend, "--namespace", self.namespace,
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
            "--log-level", "warning", *self.extra,
        ]  # fmt: skip

    def env(self) -> dict[str, str] | None:
        """Ours, able to import what this process imports, whatever the server's cwd.

        That is a ``module:callable`` backend or provider wrapper of the project that runs
        us: its directory and pytest's ``pythonpath``.
        """
        path = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        path += [p for p in sys.path if p and os.path.isdir(p) and p not in path]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}

    def readiness(self) -> Readiness:
        """GET the authorization server metadata -> 200 JSON with an issuer."""
        return Readiness(http_metadata_probe(self.url), f"authconform serve on {self.url}")

    def log_text(self) -> str:
        """What the server wrote so far."""
        try:
            return self.log.read_text("utf-8", "replace")
        except OSError:
            return ""


class ExternalService(_Base):
    """Someone else's store or server: we only restart it, with their command.

    ``restart_cmd`` is run by the shell (bounded by ``timeout``); readiness is then
    polled with ``readiness``. Stop, kill and pause are not ours to do.
    """

    provider = "external"
    can_kill = False
    can_pause = False

    def __init__(
        self,
        kind: str,
        url: str,
        readiness: Readiness,
        restart_cmd: str | None,
        *,
        timeout: float = 120.0,
    ) -> None:
        """Remember how to reach and restart it."""
        self.kind = kind
        self._url = url
        self._readiness = readiness
        self.restart_cmd = restart_cmd
        self.timeout = timeout

    @property
    def url(self) -> str:
        """The URL we were given."""
        return self._url

    @property
    def data_dir(self) -> Path | None:
        """Unknown."""
        return None

    def _unsupported(self, what: str) -> Unsupported:
        return Unsupported(f"{what}: the {self.kind} at the given URL is not ours to {what}")

    def start(self) -> None:
        """Wait until ready (it is started by someone else)."""
        started = time.monotonic()
        self._readiness.wait()
        self.last_ready = time.monotonic() - started

    def stop(self) -> None:
        """Not ours."""
        raise self._unsupported("stop")

    def kill(self) -> None:
        """Not ours."""
        raise self._unsupported("kill")

    def pause(self) -> None:
        """Not ours."""
        raise self._unsupported("pause")

    def resume(self) -> None:
        """Not ours."""
        raise self._unsupported("resume")

    def restart(self, *, kill: bool = False) -> float:
        """Run ``restart_cmd`` and wait until ready; ``kill=True`` is unsupported."""
        if kill:
            raise self._unsupported("kill")
        if not self.restart_cmd:
            raise Unsupported(
                f"restart: no --authconform-restart-cmd given for the {self.kind} at {self.url}"
            )
        started = time.monotonic()
        done = subprocess.run(  # noqa: S602 - the user's own command, run as they wrote it
            self.restart_cmd, shell=True, timeout=self.timeout, capture_output=True, check=False
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
            raise RuntimeError(f"--authconform-restart-cmd exited with {done.returncode}: {tail}")
        self._readiness.wait(timeout=self.timeout)
        self.last_ready = time.monotonic() - started
        return self.last_ready

    @contextlib.contextmanager
    def stopped(self, *, kill: bool = False) -> Iterator[None]:
        """An external service is restarted at the end of the block (it never stops in it)."""
        yield
        self.restart(kill=kill)

    def close(self) -> None:
        """Nothing of ours to remove."""
