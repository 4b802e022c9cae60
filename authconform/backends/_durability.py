"""What a store's own settings say about acknowledged writes: kept, or lost on a crash.

``assess(durability)`` reads the mapping ``health()`` returns (the store's configuration
as the backend found it) and tells whether a write the store acknowledged can be lost:

==========================  ==========================================================
Redis                       ``appendonly yes`` + ``appendfsync always``: kept.
                            ``everysec``: a process crash loses nothing (the AOF is
                            written to the kernel before the reply), a machine crash
                            up to ~1 s. ``appendfsync no``: up to ~30 s (the kernel's
                            flush). No AOF: everything since the last RDB snapshot
                            (``save``), or everything. ``maxmemory-policy`` other than
                            ``noeviction`` evicts live records (every record but a
                            client carries a TTL, so ``volatile-*`` evicts grants too).
PostgreSQL                  ``fsync on`` + ``synchronous_commit`` on/local/remote_*:
                            kept. ``synchronous_commit off``: up to 3 x
                            ``wal_writer_delay`` (commits still in WAL buffers).
                            ``fsync off``: a machine crash loses (and may corrupt).
SQLite                      WAL + ``synchronous`` FULL/EXTRA: kept. WAL + NORMAL: a
                            process crash loses nothing, a machine crash the commits
                            since the last WAL sync. OFF: a machine crash loses.
memory / fakeredis          everything, on any restart.
==========================  ==========================================================

A third-party backend can answer for itself: a ``durability`` entry
``acknowledged_writes`` whose value starts with ``kept`` or ``lost`` is taken as it is.
Anything else is ``unknown`` (``loses`` is None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Durability", "assess"]


@dataclass(frozen=True)
class Durability:
    """The verdict on one store's settings."""

    loses: bool | None  # acknowledged writes can be lost (None: cannot tell)
    process_crash: str  # what a crash of the store's process loses
    machine_crash: str  # what a power loss / kernel crash loses
    evicts: bool = False  # the store may evict live records under memory pressure
    reasons: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for reports: what is lost on which crash, and why."""
        if self.loses is None:
            head = "acknowledged writes: unknown"
        elif self.loses:
            head = (
                f"acknowledged writes lost: process crash {self.process_crash}, "
                f"machine crash {self.machine_crash}"
            )
        else:
            head = "acknowledged writes kept on a process or machine crash"
        return "; ".join((head, *self.reasons))


def _lost(
    process: str, machine: str, *, evicts: bool = False, reasons: tuple[str, ...] = ()
) -> Durability:
    return Durability(
        loses=True, process_crash=process, machine_crash=machine, evicts=evicts, reasons=reasons
    )


def _kept(*, evicts: bool = False, reasons: tuple[str, ...] = ()) -> Durability:
    return Durability(
        loses=False, process_crash="none", machine_crash="none", evicts=evicts, reasons=reasons
    )


def _redis(d: Mapping[str, str]) -> Durability:
    reasons: list[str] = []
    policy = d.get("maxmemory-policy", "")
    evicts = bool(policy) and policy != "noeviction"
    if evicts:
        reasons.append(
            f"maxmemory-policy {policy} evicts live grants and tokens under memory pressure "
            "(use noeviction)"
        )
    if "persistence" in d and "fakeredis" in d["persistence"]:
        why = ("fakeredis keeps data in process memory", *reasons)
        return _lost("everything", "everything", evicts=evicts, reasons=why)
    aof = d.get("appendonly", "").lower() == "yes"
    fsync = d.get("appendfsync", "").lower()
    if aof and fsync == "always":
        return _kept(evicts=evicts, reasons=("appendonly yes, appendfsync always", *reasons))
    if aof and fsync == "everysec":
        why = ("appendfsync everysec: fsync once a second", *reasons)
        return _lost("none", "up to ~1 s", evicts=evicts, reasons=why)
    if aof:
        why = (f"appendfsync {fsync or '?'}: the kernel decides when", *reasons)
        return _lost("none", "up to ~30 s (kernel flush)", evicts=evicts, reasons=why)
    save = d.get("save", "")
    lost = "everything since the last RDB snapshot" if save.strip() else "everything"
    why = (f"appendonly no, save {save!r}: no append-only file", *reasons)
    return _lost(lost, lost, evicts=evicts, reasons=why)


def _postgres(d: Mapping[str, str]) -> Durability:
    reasons: list[str] = []
    fsync = d.get("fsync", "on").lower() == "on"
    sync = d.get("synchronous_commit", "on").lower()
    if d.get("full_page_writes", "on").lower() != "on":
        reasons.append("full_page_writes off: a machine crash can corrupt pages")
    if sync == "off":
        window = "up to 3 x wal_writer_delay"
        why = ("synchronous_commit off: commit returns before its WAL is flushed", *reasons)
        return _lost(window, window, reasons=why)
    if not fsync:
        why = ("fsync off", *reasons)
        return _lost("none", "recent commits (and possibly the cluster)", reasons=why)
    why = (f"synchronous_commit {sync}, fsync on", *reasons)
    if reasons:
        return _lost("none", "possible corruption", reasons=why)
    return _kept(reasons=why)


def _sqlite(d: Mapping[str, str]) -> Durability:
    journal = d.get("journal_mode", "").lower()
    sync = d.get("synchronous", "").upper()
    if journal in ("memory", "off"):
        return _lost("the transaction in flight (and possibly the file)", "possibly the file",
                     reasons=(f"journal_mode {journal}",))
    if sync in ("FULL", "EXTRA"):
        return _kept(reasons=(f"journal_mode {journal}, synchronous {sync}",))
    if sync == "NORMAL" and journal == "wal":
        why = ("journal_mode wal, synchronous NORMAL: the WAL is synced at checkpoints only",)
        return _lost("none", "commits since the last WAL sync", reasons=why)
    return _lost("none" if sync else "unknown", "recent commits",
                 reasons=(f"journal_mode {journal}, synchronous {sync or '?'}",))


def assess(durability: Mapping[str, str]) -> Durability:
    """The verdict on the settings ``health().durability`` reported (see the docstring)."""
    own = durability.get("acknowledged_writes", "")
    if own.startswith("kept"):
        return _kept(reasons=(own,))
    if own.startswith("lost"):
        return _lost("see reason", "see reason", reasons=(own,))
    if "appendonly" in durability or "maxmemory-policy" in durability:
        return _redis(durability)
    if "synchronous_commit" in durability:
        return _postgres(durability)
    if "journal_mode" in durability:
        return _sqlite(durability)
    persistence = durability.get("persistence", "")
    if persistence.startswith("none"):
        return _lost("everything", "everything", reasons=(persistence,))
    return Durability(
        loses=None,
        process_crash="unknown",
        machine_crash="unknown",
        reasons=("health() reports no durability settings authconform can judge",),
    )
