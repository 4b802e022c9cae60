"""Services the harness starts, stops, kills, pauses and restarts, and faults it injects.

- :class:`Service` handles (``_service``): :class:`LocalRedis`, :class:`LocalPostgres`,
  :class:`LocalServer` (``authconform serve``), :class:`ExternalService` (someone else's,
  restarted with a command) and ``ContainerService`` (testcontainers), chosen in that
  order of preference by :func:`store_service` (``_providers``).
- :class:`Readiness` with protocol probes (``_readiness``).
- :class:`FaultProxy` (``_proxy``): stall, slow, drop mid-command, injected errors.
- Process groups that never outlive the run (``_groups``): :func:`spawn`, :func:`reap`,
  :func:`leftover_pids`, :func:`signal_group`, :func:`stop_groups`.

Heavy imports (docker, testcontainers, psycopg) happen inside the functions that need them.
"""

from authconform.procs._containers import ContainerService, docker_unavailable, images
from authconform.procs._groups import (
    LEDGER_ENV,
    descendants,
    leftover_pids,
    own_dir,
    reap,
    signal_group,
    signal_tree,
    spawn,
    stop_group,
    stop_groups,
)
from authconform.procs._providers import PROVIDER_ENV, external, store_service
from authconform.procs._proxy import Fault, FaultProxy, redis_commands
from authconform.procs._readiness import (
    NotReady,
    Readiness,
    http_metadata_probe,
    postgres_probe,
    redis_probe,
)
from authconform.procs._service import (
    ExternalService,
    LocalPostgres,
    LocalRedis,
    LocalServer,
    Service,
    Unavailable,
    Unsupported,
    postgres_bindir,
)

__all__ = [
    "PROVIDER_ENV",
    "LEDGER_ENV",
    "ContainerService",
    "ExternalService",
    "Fault",
    "FaultProxy",
    "LocalPostgres",
    "LocalRedis",
    "LocalServer",
    "NotReady",
    "Readiness",
    "Service",
    "Unavailable",
    "Unsupported",
    "descendants",
    "docker_unavailable",
    "external",
    "http_metadata_probe",
    "images",
    "leftover_pids",
    "own_dir",
    "postgres_bindir",
    "postgres_probe",
    "reap",
    "redis_commands",
    "redis_probe",
    "signal_group",
    "signal_tree",
    "spawn",
    "stop_group",
    "stop_groups",
    "store_service",
]
