"""The container provider: Redis and PostgreSQL under testcontainers, when a Docker engine answers.

Images come from ``images.toml`` beside this module (package data: the suites ship),
pinned by tag, never ``latest``. A container is started with the same command-line
settings the local provider uses (``redis-server --appendfsync ...``, ``postgres -c ...``)
and a fixed host port, so a restart keeps its URL. Stop, kill, pause and restart act on
the container (``docker stop/kill/pause/start``); closing removes it, and testcontainers'
reaper (Ryuk) removes it too if the run dies first.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
import tomllib
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from authconform._net import free_loopback_port
from authconform.procs._readiness import Readiness, postgres_probe, redis_probe
from authconform.procs._service import Unavailable, _Base

__all__ = ["ContainerService", "container_command", "docker_unavailable", "images"]


def images(text: str | None = None) -> dict[str, dict[str, Any]]:
    """The pinned images, by service; raises ValueError for an unpinned or ``latest`` tag.

    ``text``: a TOML document to check instead of the shipped ``images.toml``.
    """
    if text is None:
        text = resources.files("authconform.procs").joinpath("images.toml").read_text("utf-8")
    data = tomllib.loads(text)
    for service, entry in data.items():
        image = str(entry.get("image", ""))
        name, _, tag = image.rpartition(":")
        if not name or not tag or "/" in tag or tag == "latest":
            raise ValueError(
                f"images.toml: {service} image {image!r} must be pinned by a tag (never latest)"
            )
    return data


def docker_unavailable(timeout: float = 2.0) -> str | None:
    """None if a Docker engine answers ``ping``, else an ``unavailable:`` sentence."""
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]
        import testcontainers.core.container  # noqa: F401 - the provider needs it
    except ImportError:
        return (
            "unavailable: the container provider needs testcontainers: "
            "pip install 'authconform[containers]'"
        )
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if where.startswith("unix://") and not os.path.exists(where[len("unix://") :]):
        return f"unavailable: no Docker engine answers at {where} (no such socket)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            client = docker.from_env(timeout=int(max(1, timeout)))
            try:
                client.ping()
            finally:
                client.close()
                gc.collect()  # a failed connect leaves its socket to the collector
    except Exception as exc:  # any failure to reach the engine means: no containers here
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return f"unavailable: no Docker engine answers at {where} ({first})"
    return None


def container_command(kind: str, settings: Mapping[str, str]) -> list[str]:
    """The command line of a ``kind`` container with these store settings.

    Redis: ``redis-server`` with ``--name value`` per directive (nothing on disk unless
    asked); PostgreSQL: ``postgres`` with ``-c name=value`` per setting.
    """
    if kind == "redis":
        merged = {"protected-mode": "no", "save": "", "appendonly": "no"}
        merged.update({k.replace("_", "-"): v for k, v in settings.items()})
        argv = ["redis-server"]
        for name, value in merged.items():
            argv += [f"--{name}", value]
        return argv
    argv = ["postgres"]
    for name, value in settings.items():
        argv += ["-c", f"{name}={value}"]
    return argv


class ContainerService(_Base):
    """A store in a container: ``kind`` is ``redis`` or ``postgres``."""

    provider = "container"

    def __init__(self, kind: str, settings: Mapping[str, str] | None = None) -> None:
        """Pick the pinned image; nothing runs until :meth:`start`."""
        table = images()
        if kind not in table:
            raise Unavailable(f"unavailable: images.toml has no image for {kind}")
        reason = docker_unavailable()
        if reason is not None:
            raise Unavailable(reason)
        self.kind = kind
        self.image = str(table[kind]["image"])
        self.inner_port = int(table[kind]["port"])
        self.port = free_loopback_port()
        self.settings: dict[str, str] = dict(settings or {})
        self._container: Any = None
        self._stale = False  # settings changed since the container was created

    @property
    def url(self) -> str:
        """The store's URL on the fixed host port."""
        if self.kind == "redis":
            return f"redis://127.0.0.1:{self.port}/0"
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path | None:
        """Inside the container; not reachable from here."""
        return None

    def configure(self, **settings: str) -> None:
        """Change settings; the next start creates the container afresh with them."""
        if any(self.settings.get(k) != v for k, v in settings.items()):
            self._stale = True
        self.settings.update(settings)

    def command(self) -> list[str]:
        """The store's command line inside the container."""
        return container_command(self.kind, self.settings)

    def readiness(self) -> Readiness:
        """The same protocol probes as the local provider."""
        if self.kind == "redis":
            return Readiness(redis_probe("127.0.0.1", self.port), f"redis container {self.image}")
        return Readiness(
            postgres_probe(self.url), f"postgres container {self.image}", timeout=90, interval=0.2
        )

    def start(self) -> None:
        """Create (first time) or start the container; wait until ready."""
        from testcontainers.core.container import DockerContainer

        started = time.monotonic()
        if self._container is not None and self._stale:
            self.close()  # new settings: a new container (the data starts empty)
        self._stale = False
        if self._container is None:
            container = DockerContainer(self.image)
            container.with_bind_ports(self.inner_port, self.port)
            container.with_command(self.command())
            if self.kind == "postgres":
                container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
            self._container = container.start()
        else:
            self._container.get_wrapped_container().start()
        self.readiness().wait()
        self.last_ready = time.monotonic() - started

    def _wrapped(self) -> Any:
        if self._container is None:
            raise RuntimeError("the container was never started")
        return self._container.get_wrapped_container()

    def stop(self) -> None:
        """``docker stop`` (SIGTERM, then SIGKILL after 30 s); the container stays."""
        self._wrapped().stop(timeout=30)

    def kill(self) -> None:
        """``docker kill`` (SIGKILL)."""
        with contextlib.suppress(Exception):  # already stopped
            self._wrapped().kill()

    def pause(self) -> None:
        """``docker pause`` (the cgroup freezer: like SIGSTOP)."""
        self._wrapped().pause()

    def resume(self) -> None:
        """``docker unpause``."""
        self._wrapped().unpause()

    def close(self) -> None:
        """Remove the container."""
        if self._container is not None:
            container, self._container = self._container, None
            with contextlib.suppress(Exception):
                container.stop()
