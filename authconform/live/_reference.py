"""The reference server as the default target: started as subprocesses, stopped after.

``python -m authconform.cli serve ... --port 0`` prints
``authconform serve: listening on http://127.0.0.1:PORT`` once bound. Instance 1 is
started first; further instances share its issuer (``--issuer``), backend and namespace,
like replicas behind one name. Output goes to one log file per process (the token-leak
check reads them).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from authconform.procs import signal_group, spawn, stop_groups

__all__ = ["ReferenceServer", "StartError", "backend_argument", "start_reference"]

_LISTENING = re.compile(r"authconform serve: listening on (http://\S+)")


class StartError(RuntimeError):
    """The reference server could not be started (the reason is the message)."""


@dataclass
class ReferenceServer:
    """Running reference-server processes."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log_text(self) -> str:
        """Everything the processes wrote so far."""
        return "\n".join(p.read_text("utf-8", "replace") for p in self.logs if p.exists())

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM each process group we started, SIGKILL after ``grace`` seconds."""
        stop_groups(self.procs, grace)


def backend_argument(name: str, source: str, redis_url: str | None,
                     postgres_url: str | None, workdir: Path) -> str:
    """What to pass as ``serve --backend`` so that every process reaches one store."""
    if name == "sqlite":
        return f"sqlite:///{workdir / 'live.sqlite3'}"
    if name == "redis" and redis_url:
        return redis_url
    if name == "postgres" and postgres_url:
        return postgres_url
    if ":" in source and "(" not in source:
        return source
    return name


async def _start_one(args: list[str], log: Path, timeout: float) -> tuple[
    subprocess.Popen[bytes], str
]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # its own process group, killed by the kernel if this process dies (authconform.procs)
    proc = spawn([sys.executable, "-m", "authconform.cli", "serve", *args], log=log, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text("utf-8", "replace")
        match = _LISTENING.search(text)
        if match:
            return proc, match.group(1).rstrip("/")
        if proc.poll() is not None:
            tail = "\n".join(text.strip().splitlines()[-8:])
            raise StartError(f"`authconform serve` exited with {proc.returncode}: {tail}")
        await asyncio.sleep(0.1)
    signal_group(proc)
    proc.wait(5)
    raise StartError(f"`authconform serve` did not report listening within {timeout:g} s")


async def start_reference(
    backend: str,
    namespace: str,
    workdir: Path,
    *,
    instances: int = 1,
    extra: list[str] | None = None,
    timeout: float = 30.0,
) -> ReferenceServer:
    """Start ``instances`` processes over one backend and namespace."""
    server = ReferenceServer()
    base = ["--backend", backend, "--namespace", namespace, "--port", "0",
            "--host", "127.0.0.1", *(extra or [])]
    try:
        for i in range(instances):
            args = list(base)
            if server.urls:
                args += ["--issuer", server.urls[0]]
            log = workdir / f"server-{i}.log"
            proc, url = await _start_one(args, log, timeout)
            server.procs.append(proc)
            server.logs.append(log)
            server.urls.append(url)
    except BaseException:
        server.stop()
        raise
    return server
