"""``authconform clean``: drop what hard-killed runs left in the shared stores.

Only namespaces of an expired lease of ours are dropped (see ``authconform.cleanup``): a
run that is still going renews its lease, and data without a lease of ours is never
touched.
"""

from __future__ import annotations

import argparse
import sys

from authconform.contract import BackendSettings

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``authconform clean``; returns the process exit code."""
    defaults = BackendSettings()
    parser = argparse.ArgumentParser(
        prog="authconform clean",
        description="Drop the namespaces of runs whose lease has expired (a run killed with "
        "SIGKILL, by the OOM killer or by pytest-timeout's thread method). A live run's "
        "namespace, and anything without a lease of ours, is never touched.",
    )
    parser.add_argument("--backend", default="redis,postgres",
                        help="stores to clean, comma-separated (default: redis,postgres)")
    parser.add_argument("--redis-url", default=defaults.redis_url)
    parser.add_argument("--postgres-url", default=defaults.postgres_url)
    parser.add_argument("--dry-run", action="store_true", help="say what would go; drop nothing")
    args = parser.parse_args(argv)
    from authconform._extras import MissingExtra, require
    from authconform._urls import safe_url
    from authconform.cleanup import LEASED_BACKENDS, clean

    settings = BackendSettings(redis_url=args.redis_url, postgres_url=args.postgres_url)
    services = [s.strip() for s in args.backend.split(",") if s.strip()]
    unknown = [s for s in services if s not in LEASED_BACKENDS]
    if unknown:
        parser.error(f"--backend {','.join(unknown)}: leases exist on {', '.join(LEASED_BACKENDS)}")
    status = 0
    for service in services:
        url = settings.redis_url if service == "redis" else settings.postgres_url
        try:
            require(f"authconform clean --backend {service}", service)
            clean(service, settings, dry_run=args.dry_run)
        except MissingExtra as exc:
            print(str(exc), file=sys.stderr)
            status = 2
        except Exception as exc:  # noqa: BLE001 - one line per unreachable store
            print(f"{service}: cannot clean {safe_url(url)}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            status = 3
    return status


if __name__ == "__main__":
    raise SystemExit(main())
