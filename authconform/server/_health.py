"""``GET /health``: the store behind the server, as its backend's ``health()`` sees it.

200 when the store answers, 503 when it does not; the body is JSON and never cached::

    {"status": "up", "backend": "redis", "latency_ms": 0.4,
     "durability": {"appendonly": "yes", "appendfsync": "always", ...},
     "acknowledged_writes": "kept on a process or machine crash; ...",
     "loses_acknowledged_writes": false, "evicts_live_records": false}

``acknowledged_writes`` is ``authconform.backends._durability.assess`` of the settings
the store reported. The endpoint needs no authentication and shows no record, key or
secret: only settings, which is what an operator's probe needs.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authconform.backends._durability import assess
from authconform.contract import StorageBackend

__all__ = ["HEALTH_PATH", "health_endpoint"]

HEALTH_PATH = "/health"


def health_endpoint(backend: StorageBackend) -> object:
    """The Starlette endpoint for :data:`HEALTH_PATH` over ``backend``."""

    async def health(request: Request) -> Response:
        report = await backend.health()
        verdict = assess(report.durability)
        body = {
            "status": "up" if report.ok else "down",
            "backend": backend.name,
            "latency_ms": round(report.latency_ms, 3),
            "durability": dict(report.durability),
            "acknowledged_writes": verdict.summary(),
            "loses_acknowledged_writes": verdict.loses,
            "evicts_live_records": verdict.evicts,
        }
        if report.detail:
            body["detail"] = report.detail
        return JSONResponse(
            body, status_code=200 if report.ok else 503, headers={"cache-control": "no-store"}
        )

    return health
