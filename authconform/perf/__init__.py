"""Benchmarks (``authconform bench ...``) and performance helpers.

Submodules are imported lazily by ``authconform.perf.cli``; importing this package is cheap.

- ``storage_bench``: per-operation latency of storage backends against the raw store round trip.
- ``server_bench``: the reference server's hot path (added separately).
"""

from __future__ import annotations

__all__: list[str] = []
