"""Open one live target for a run: the deployment's URLs, or the reference server we start.

Used by the ``live_session`` fixture (``authconform.fixtures``); everything it creates
(reference-server processes, the reference server's namespace, clients and tokens on the
target) is gone when the context exits.
"""

from __future__ import annotations

import hashlib
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
    InProcessServer,
    ReferenceServer,
    StartError,
    backend_argument,
    start_in_process,
    start_reference,
)
from authconform.live._target import Target

__all__ = ["open_live_session"]


#: lifetimes (s) the reference server runs with when the user declares none: short, so
#: the expiry checks wait little (their material ages while the other checks run)
REFERENCE_LIFETIMES = {"code_ttl": 3.0, "refresh_ttl": 8.0}
#: the reference target declares two scopes, one of them needed by a tool, so the scope
#: checks (order, refresh narrowing, insufficient_scope) have something to test
REFERENCE_SCOPES = ["--scope", "mcp", "--scope", "mcp:identity",
                    "--tool-scope", "whoami=mcp:identity"]


def _optional_float(config: pytest.Config, name: str) -> float | None:
    value = setting(config, name)
    return float(value) if value not in (None, "") else None


def _live_config(config: pytest.Config) -> LiveConfig:
    limit = setting(config, "auth_limit")
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
        code_ttl=_optional_float(config, "code_ttl"),
        refresh_ttl=_optional_float(config, "refresh_ttl"),
        auth_limit=int(limit) if limit not in (None, "") else None,
        race_size=int(setting(config, "race_size")),
        race_rounds=int(setting(config, "race_rounds")),
    )


async def preflight(config: pytest.Config, urls: list[str]) -> str | None:
    """Why the ``--server-url`` target cannot be tested (one line), or None.

    Discovery from the first URL must find authorization-server metadata (through an
    MCP endpoint's 401 or directly); every other instance must serve the same metadata
    document. Runs before any check, on a throwaway client.
    """
    from authconform.live._discovery import discover
    from authconform.live._record import LiveFailure

    timeout = float(setting(config, "timeout"))
    target = Target("preflight", urls, timeout=timeout)
    what = f"--server-url {urls[0]}"
    try:
        disc = await discover(target)
        for instance in range(1, len(urls)):
            url = target.on(instance, disc.metadata_url)
            ex = await target.request("GET", url, purpose="metadata", instance=instance)
            if ex.status != 200 or not isinstance(ex.json_body(), dict):
                return (f"--server-url {urls[instance]} (instance {instance + 1}) answers "
                        f"{ex.describe()} for the metadata the first instance serves")
    except LiveFailure as exc:
        observed = exc.observed
        if "no response" in observed or exc.exchanges and exc.exchanges[-1].error:
            return f"{what}: no answer ({observed})"
        return f"{what} answers nothing like OAuth or MCP: {observed}"
    except pytest.skip.Exception as exc:
        if target.down is not None:
            return f"{what}: no answer ({target.down})"
        return f"{what}: {str(exc.msg).removeprefix('unavailable: ')}"
    finally:
        await target.aclose()
    return None


def _declared(args: list[str], flag: str) -> float | None:
    """The last value given to ``flag`` (``--flag V`` or ``--flag=V``) in ``args``."""
    found = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    try:
        return float(found) if found is not None else None
    except ValueError:
        return None


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
    local: InProcessServer | None = None
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
        if target_spec.variant is not None:
            namespace += "_" + hashlib.sha256(target_spec.name.encode()).hexdigest()[:6]
        in_process = bool(setting(config, "in_process"))
        if in_process:
            count = 1
        backend_arg = backend_argument(
            spec.name, spec.source, run.settings.redis_url, run.settings.postgres_url, workdir
        )
        user_args = [a for a in setting(config, "server_arg") if a]
        if target_spec.variant is not None:
            from authconform.live._drivers import load_driver

            wrapper = load_driver(target_spec.variant)
            user_args = ["--provider-wrapper", target_spec.variant,
                         *getattr(wrapper, "authconform_server_args", ()), *user_args]
        for name, flag in (("code_ttl", "--code-ttl"), ("refresh_ttl", "--refresh-ttl")):
            declared = _declared(user_args, flag)
            if declared is not None:
                setattr(cfg, name, declared)
            elif getattr(cfg, name) is None:
                setattr(cfg, name, REFERENCE_LIFETIMES[name])
        extra = ["--access-ttl", str(setting(config, "access_ttl")),
                 "--code-ttl", f"{cfg.code_ttl:g}", "--refresh-ttl", f"{cfg.refresh_ttl:g}"]
        if not any(a.startswith(("--scope", "--tool-scope")) for a in user_args):
            extra += REFERENCE_SCOPES
        extra += user_args
        try:
            if in_process:
                local = await start_in_process(["--backend", backend_arg, *extra], namespace)
            else:
                server = await start_reference(
                    backend_arg, namespace, workdir, instances=count, extra=extra
                )
        except StartError as exc:
            pytest.skip(f"unavailable: reference server over {spec.name}: {exc}")
        started = local.urls if local is not None else server.urls if server else []
        urls = [u if _as_only(extra) else u + "/mcp" for u in started]
        if spec.name not in PROCESS_LOCAL:
            drop = (spec, namespace, workdir)
    redactor = Redactor()
    target = Target(
        target_spec.name, urls, timeout=timeout, redactor=redactor,
        rate=float(setting(config, "rate")), max_wait=cfg.max_wait,
        transport=local.transport if local is not None else None,
    )
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
        notes = config.stash[NOTES]
        if target.down is not None:
            notes.append(f"{target.name}: the target stopped answering "
                         f"({redactor.redact(target.down)}); the checks after that are "
                         "unavailable")
        if target.rate_limited:
            notes.append(f"{target.name}: {len(target.rate_limited)} answers were 429 "
                         f"(first: {target.rate_limited[0]}); see --authconform-rate")
        unreported = [f for f in live.findings if f.key() not in live.reported]
        for found in unreported[:5]:
            notes.append(f"{target.name}: finding for {found.spec} (its check did not run): "
                         f"{redactor.redact(found.observed)}")
        for line in live.notes:
            notes.append(f"{target.name}: {redactor.redact(line)}")
        target.recorder = Recorder()
        try:
            problems, more = ([], []) if target.down is not None else await live.cleanup()
            for problem in [*problems, *more]:
                config.stash[NOTES].append(f"{target.name}: cleanup: {redactor.redact(problem)}")
        finally:
            await target.aclose()
            if server is not None:
                server.stop()
            if local is not None:
                await local.stop()
            if drop is not None:
                await _drop(config, *drop)
