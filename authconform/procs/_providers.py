"""Which provider gives a service, in order: an explicit URL, a container, a local binary.

1. An explicit URL (the user's own store or server): an :class:`ExternalService` that we
   only restart, with ``--authconform-restart-cmd``; without it, restart checks skip.
2. testcontainers, when a Docker engine answers (images pinned in ``images.toml``).
3. A local binary (``redis-server``; PostgreSQL's ``initdb`` + ``postgres``, as an
   unprivileged user when we are root) in a temp dir on a free loopback port.

When none can, :class:`Unavailable` names every place probed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from authconform.procs._containers import ContainerService, docker_unavailable
from authconform.procs._readiness import (
    Readiness,
    http_metadata_probe,
    postgres_probe,
    redis_probe,
    split_hostport,
)
from authconform.procs._service import (
    ExternalService,
    LocalPostgres,
    LocalRedis,
    Service,
    Unavailable,
)

__all__ = ["PROVIDER_ENV", "external", "store_service"]

#: ``AUTHCONFORM_PROCS_PROVIDER=local`` skips the container provider (``container``: only it)
PROVIDER_ENV = "AUTHCONFORM_PROCS_PROVIDER"


def external(kind: str, url: str, restart_cmd: str | None) -> ExternalService:
    """Someone else's store or server at ``url``, restarted only with ``restart_cmd``."""
    if kind == "redis":
        host, port = split_hostport(url, 6379)
        from urllib.parse import unquote, urlsplit

        password = urlsplit(url).password
        probe = redis_probe(host, port, unquote(password) if password else None)
    elif kind == "postgres":
        probe = postgres_probe(url)
    else:
        probe = http_metadata_probe(url)
    return ExternalService(kind, url, Readiness(probe, f"{kind} at the given URL"), restart_cmd)


def store_service(
    kind: str,
    settings: Mapping[str, str] | None = None,
    *,
    url: str | None = None,
    restart_cmd: str | None = None,
) -> Service:
    """A ``redis`` or ``postgres`` service (not yet started), from the first provider that can.

    ``url`` given: the external provider (the caller decides what it may do with it).
    ``settings``: store settings (redis.conf directives / postgres ``-c``) for our own.
    """
    if kind not in ("redis", "postgres"):
        raise ValueError(f"no provider for a {kind!r} store")
    if url is not None:
        return external(kind, url, restart_cmd)
    choice = os.environ.get(PROVIDER_ENV, "")
    probed: list[str] = []
    if choice != "local":
        reason = docker_unavailable()
        if reason is None:
            return ContainerService(kind, settings)
        probed.append("containers: " + reason.removeprefix("unavailable: "))
    if choice != "container":
        try:
            if kind == "redis":
                return LocalRedis(settings)
            return LocalPostgres(settings)
        except Unavailable as exc:
            probed.append("local binary: " + str(exc).removeprefix("unavailable: "))
    raise Unavailable(f"unavailable: no {kind} could be started ({'; '.join(probed)})")
