"""Open one live target for a run: the deployment's URLs, or the reference server we start.

Used by the ``live_session`` fixture (``authconform.fixtures``); everything it creates
(reference-server processes, the reference server's namespace, clients and tokens on the
target) is gone when the context exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from authconform._options import setting
from authconform._session import run_config
from authconform.live._flows import Live, LiveConfig
from authconform.live._pytest import NOTES, PROCESS_LOCAL, TargetSpec
from authconform.live._record import Recorder
from authconform.live._redact import Redactor
from authconform.live._reference import (
    ReferenceServer,
    StartError,
    backend_argument,
    start_reference,
)
from authconform.live._target import Target

__all__ = ["open_live_session"]


def _live_config(config: pytest.Config) -> LiveConfig:
    return LiveConfig(
        driver=setting(config, "driver"),
        client_id=setting(config, "client_id"),
        client_secret=setting(config, "client_secret"),
        redirect_uri=setting(config, "redirect_uri"),
        scope=setting(config, "scope"),
        max_wait=float(setting(config, "max_wait")),
        flows=int(setting(config, "flows")),
        server_log=tuple(p for p in setting(config, "server_log") if p),
        client_auth_method=setting(config, "client_auth"),
    )


def _as_only(args: list[str]) -> bool:
    """True when the reference server's arguments make it an authorization server only."""
    if "--no-mcp" in args or "--role=as" in args:
        return True
    return any(a == "--role" and b == "as" for a, b in zip(args, args[1:], strict=False))


async def _drop(config: pytest.Config, spec: Any, namespace: str, workdir: Path) -> None:
    settings = replace(
        run_config(config).settings, namespace=namespace,
        sqlite_path=str(workdir / "live.sqlite3"),
    )
    backend = spec.factory(settings)
    try:
        await backend.drop_namespace()
    finally:
        await backend.close()


@asynccontextmanager
async def open_live_session(config: pytest.Config, target_spec: TargetSpec) -> AsyncIterator[Live]:
    """The live target of one parametrization: discovery, clients, cleanup at the end."""
    cfg = _live_config(config)
    timeout = float(setting(config, "timeout"))
    server: ReferenceServer | None = None
    drop: tuple[Any, str, Path] | None = None
    urls = list(target_spec.urls)
    if not urls:
        run = run_config(config)
        spec = target_spec.backend
        workdir = config._tmp_path_factory.mktemp("live")  # type: ignore[attr-defined]
        wanted = setting(config, "instances")
        if wanted == "auto":
            count = 1 if spec.name in PROCESS_LOCAL else 2
        else:
            count = int(wanted)
        namespace = run.settings.namespace[:35] + "_live"
        backend_arg = backend_argument(
            spec.name, spec.source, run.settings.redis_url, run.settings.postgres_url, workdir
        )
        extra = ["--access-ttl", str(setting(config, "access_ttl"))]
        extra += [a for a in setting(config, "server_arg") if a]
        try:
            server = await start_reference(
                backend_arg, namespace, workdir, instances=count, extra=extra
            )
        except StartError as exc:
            pytest.skip(f"unavailable: reference server over {spec.name}: {exc}")
        urls = [u if _as_only(extra) else u + "/mcp" for u in server.urls]
        if spec.name not in PROCESS_LOCAL:
            drop = (spec, namespace, workdir)
    redactor = Redactor()
    target = Target(target_spec.name, urls, timeout=timeout, redactor=redactor)
    live = Live(target, cfg)
    if server is not None:
        live.log_source = server.log_text
    elif cfg.server_log:
        log_paths = [Path(p) for p in cfg.server_log]
        live.log_source = lambda: "\n".join(
            p.read_text("utf-8", "replace") for p in log_paths if p.exists()
        )
    try:
        yield live
    finally:
        if cfg.client_id:
            used = live.issued_to.get(cfg.client_id, 0)
            config.stash[NOTES].append(
                f"{target.name}: pre-registered client {cfg.client_id}: {used} token "
                f"responses; {live.registered} clients registered dynamically"
            )
        target.recorder = Recorder()
        try:
            problems = await live.cleanup()
            for problem in problems:
                config.stash[NOTES].append(f"{target.name}: cleanup: {redactor.redact(problem)}")
        finally:
            await target.aclose()
            if server is not None:
                server.stop()
            if drop is not None:
                await _drop(config, *drop)
