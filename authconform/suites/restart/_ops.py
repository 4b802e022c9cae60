"""Every storage operation, on fresh random ids, for the fault and outage checks.

Each entry: (name, writes, call). ``writes`` marks operations that change the store
(or would, on an existing record): under a store that refuses writes only (READONLY,
OOM, a read-only transaction) these must fail closed while reads may answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from authconform.contract import (
    AccessTokenRecord,
    ChallengeRecord,
    CodeRecord,
    RefreshTokenRecord,
    ResetTokenRecord,
    SessionRecord,
    StateRecord,
    StorageBackend,
    StorageUnavailable,
)
from authconform.suites.restart._records import _uid

__all__ = ["OPERATIONS", "Outcome", "Prepared", "prepare_writes", "run_all", "run_prepared"]

Call = Callable[[Any], Awaitable[object]]


def _code() -> CodeRecord:
    return CodeRecord(client_id="c-f", subject="u-f", grant_id="g-f")


OPERATIONS: list[tuple[str, bool, Call]] = [
    ("create_client", True, lambda b: b.create_client(_uid(), {}, secret=_uid())),
    ("get_client", False, lambda b: b.get_client(_uid())),
    ("update_client", True, lambda b: b.update_client(_uid(), {"a": 1})),
    ("delete_client", True, lambda b: b.delete_client(_uid())),
    ("list_clients", False, lambda b: b.list_clients()),
    ("verify_client_secret", False, lambda b: b.verify_client_secret(_uid(), _uid())),
    ("put_code", True, lambda b: b.put_code(_uid(), _code(), 60.0)),
    ("get_code", False, lambda b: b.get_code(_uid())),
    ("consume_code", True, lambda b: b.consume_code(_uid())),
    ("put_access_token", True,
     lambda b: b.put_access_token(_uid(), AccessTokenRecord("c", "u", "g"), 60.0)),
    ("get_access_token", False, lambda b: b.get_access_token(_uid())),
    ("revoke_access_token", True, lambda b: b.revoke_access_token(_uid())),
    ("revoke_grant", True, lambda b: b.revoke_grant(_uid())),
    ("put_refresh_token", True,
     lambda b: b.put_refresh_token(_uid(), RefreshTokenRecord("c", "u", "g"), 60.0)),
    ("get_refresh_token", False, lambda b: b.get_refresh_token(_uid())),
    ("rotate_refresh_token", True, lambda b: b.rotate_refresh_token(_uid(), _uid(), 60.0)),
    ("revoke_refresh_token", True, lambda b: b.revoke_refresh_token(_uid())),
    ("put_state", True, lambda b: b.put_state(_uid(), StateRecord(client_id="c"), 60.0)),
    ("consume_state", True, lambda b: b.consume_state(_uid())),
    ("put_challenge", True,
     lambda b: b.put_challenge(_uid(), _uid(), ChallengeRecord("u"), 60.0)),
    ("attempt_challenge", True, lambda b: b.attempt_challenge(_uid(), _uid())),
    ("put_reset_token", True, lambda b: b.put_reset_token(_uid(), ResetTokenRecord("u"), 60.0)),
    ("consume_reset_token", True, lambda b: b.consume_reset_token(_uid())),
    ("create_session", True,
     lambda b: b.create_session(_uid(), SessionRecord("u"), 60.0, 60.0)),
    ("get_session", False, lambda b: b.get_session(_uid())),
    ("touch_session", True, lambda b: b.touch_session(_uid(), 60.0)),
    ("list_sessions", False, lambda b: b.list_sessions("u-" + _uid())),
    ("revoke_session", True, lambda b: b.revoke_session(_uid())),
    ("revoke_all_sessions", True, lambda b: b.revoke_all_sessions("u-" + _uid())),
    ("hit", True, lambda b: b.hit(_uid(), 5, 60.0)),
]  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What one operation did under a fault."""

    name: str
    writes: bool
    kind: str  # "unavailable", "result", "hung", "error"
    detail: str
    seconds: float


async def _one(b: StorageBackend, name: str, writes: bool, call: Call, bound: float) -> Outcome:
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(call(b), bound)
    except StorageUnavailable as exc:
        return Outcome(name, writes, "unavailable", str(exc)[:120], time.monotonic() - started)
    except TimeoutError:
        return Outcome(name, writes, "hung", f"no answer in {bound:g} s", bound)
    except Exception as exc:  # anything else is reported as the operation's failure
        return Outcome(name, writes, "error", f"{type(exc).__name__}: {exc}"[:160],
                       time.monotonic() - started)
    return Outcome(name, writes, "result", repr(result)[:80], time.monotonic() - started)


async def run_all(
    b: StorageBackend, bound: float, *, only_writes: bool = False, concurrent: bool = True
) -> list[Outcome]:
    """Run every operation (or the writing ones) under ``bound`` seconds each."""
    ops = [(n, w, c) for n, w, c in OPERATIONS if w or not only_writes]
    if concurrent:
        return list(await asyncio.gather(*(_one(b, n, w, c, bound) for n, w, c in ops)))
    return [await _one(b, n, w, c, bound) for n, w, c in ops]


Verify = Callable[[Any, object], Awaitable["str | None"]]


@dataclass(frozen=True)
class Prepared:
    """A state-changing call on an existing record, and how to verify a success it claims."""

    name: str
    call: Call
    verify: Verify


def _status(result: object) -> str:
    status = getattr(result, "status", None)
    return status.name if status is not None else repr(result)


async def prepare_writes(b: StorageBackend) -> list[Prepared]:
    """Records that exist, and a state-changing call on each (plus creates and a hit).

    For a store that refuses writes only: "not found" for an id that does not exist is
    a true answer, and a write the store still allows (Redis lets DEL through under OOM)
    may succeed. What must never happen is a success for a write that did not happen:
    each call's ``verify`` checks, once the fault is lifted, that what it claimed is so.
    """
    ids = {k: _uid() for k in ("new_client", "client_u", "client_d", "code", "new_code",
                               "access", "access_g", "refresh", "rotated_to", "state", "reset",
                               "challenge", "session", "rate")}
    grant, grant_g = "g-" + _uid(), "g-" + _uid()
    await b.create_client(ids["client_u"], {"a": 0}, secret=_uid())
    await b.create_client(ids["client_d"], {"a": 0}, secret=_uid())
    await b.put_code(ids["code"], _code(), 60.0)
    await b.put_access_token(ids["access"], AccessTokenRecord("c", "u", grant), 60.0)
    await b.put_access_token(ids["access_g"], AccessTokenRecord("c", "u", grant_g), 60.0)
    await b.put_refresh_token(ids["refresh"], RefreshTokenRecord("c", "u", grant), 60.0)
    await b.put_state(ids["state"], StateRecord(client_id="c"), 60.0)
    await b.put_reset_token(ids["reset"], ResetTokenRecord("u"), 60.0)
    await b.put_challenge(ids["challenge"], _uid(), ChallengeRecord("u"), 60.0)
    await b.create_session(ids["session"], SessionRecord("u"), 30.0, 60.0)

    def claim(ok: bool, what: str) -> str | None:
        return None if ok else what

    async def v_create(b: Any, r: object) -> str | None:
        return claim(await b.get_client(ids["new_client"]) is not None,
                     "create_client succeeded but the client is not in the store")

    async def v_update(b: Any, r: object) -> str | None:
        c = await b.get_client(ids["client_u"])
        return claim(r is None or (c is not None and c.metadata.get("a") == 1),
                     "update_client succeeded but the store keeps the old metadata")

    async def v_put(b: Any, r: object) -> str | None:
        return claim(await b.get_code(ids["new_code"]) is not None,
                     "put_code succeeded but the code is not in the store")

    async def v_consume(b: Any, r: object) -> str | None:
        c = await b.get_code(ids["code"])
        return claim(_status(r) != "CONSUMED" or (c is not None and c.consumed),
                     "consume_code answered CONSUMED but the code is not marked used "
                     "(it can be redeemed again)")

    async def v_revoke(b: Any, r: object) -> str | None:
        return claim(r is not True or await b.get_access_token(ids["access"]) is None,
                     "revoke_access_token answered True but the token is still valid")

    async def v_rotate(b: Any, r: object) -> str | None:
        old = await b.get_refresh_token(ids["refresh"])
        return claim(_status(r) != "ROTATED" or (old is not None and old.rotated),
                     "rotate_refresh_token answered ROTATED but the old token is not marked")

    async def v_grant(b: Any, r: object) -> str | None:
        return claim(not r or await b.get_access_token(ids["access_g"]) is None,
                     "revoke_grant reported revocations but the grant's token is valid")

    async def v_state(b: Any, r: object) -> str | None:
        again = await b.consume_state(ids["state"])
        return claim(_status(r) != "CONSUMED" or _status(again) == "ALREADY_USED",
                     "consume_state answered CONSUMED but the state can be used again")

    async def v_reset(b: Any, r: object) -> str | None:
        again = await b.consume_reset_token(ids["reset"])
        return claim(_status(r) != "CONSUMED" or _status(again) == "ALREADY_USED",
                     "consume_reset_token answered CONSUMED but the token can be used again")

    async def v_attempt(b: Any, r: object) -> str | None:
        if _status(r) != "WRONG":
            return None
        again = await b.attempt_challenge(ids["challenge"], _uid())
        left = getattr(again, "attempts_left", None)
        return claim(left == getattr(r, "attempts_left", 0) - 1 or _status(again) == "LOCKED",
                     "attempt_challenge counted an attempt the store did not record")

    async def v_touch(b: Any, r: object) -> str | None:
        s = await b.get_session(ids["session"])
        want = getattr(r, "expires_at", None)
        return claim(want is None or (s is not None and abs(s.expires_at - want) < 0.01),
                     "touch_session returned an extended expiry the store does not have")

    async def v_hit(b: Any, r: object) -> str | None:
        again = await b.hit(ids["rate"], 5, 60.0)
        return claim(getattr(again, "count", 0) == getattr(r, "count", 0) + 1,
                     "hit counted a hit the store did not record")

    async def v_delete(b: Any, r: object) -> str | None:
        return claim(r is not True or await b.get_client(ids["client_d"]) is None,
                     "delete_client answered True but the client is still there")

    return [
        Prepared("create_client", lambda b: b.create_client(ids["new_client"], {}), v_create),
        Prepared("update_client", lambda b: b.update_client(ids["client_u"], {"a": 1}),
                 v_update),
        Prepared("put_code", lambda b: b.put_code(ids["new_code"], _code(), 60.0), v_put),
        Prepared("consume_code", lambda b: b.consume_code(ids["code"]), v_consume),
        Prepared("revoke_access_token", lambda b: b.revoke_access_token(ids["access"]),
                 v_revoke),
        Prepared("rotate_refresh_token",
                 lambda b: b.rotate_refresh_token(ids["refresh"], ids["rotated_to"], 60.0),
                 v_rotate),
        Prepared("revoke_grant", lambda b: b.revoke_grant(grant_g), v_grant),
        Prepared("consume_state", lambda b: b.consume_state(ids["state"]), v_state),
        Prepared("consume_reset_token", lambda b: b.consume_reset_token(ids["reset"]), v_reset),
        Prepared("attempt_challenge", lambda b: b.attempt_challenge(ids["challenge"], _uid()),
                 v_attempt),
        Prepared("touch_session", lambda b: b.touch_session(ids["session"], 60.0), v_touch),
        Prepared("hit", lambda b: b.hit(ids["rate"], 5, 60.0), v_hit),
        Prepared("delete_client", lambda b: b.delete_client(ids["client_d"]), v_delete),
    ]


async def run_prepared(
    b: StorageBackend, calls: list[Prepared], bound: float, *, concurrent: bool = True
) -> list[tuple[Prepared, Outcome, object]]:
    """Run each prepared call under ``bound`` s: (call, outcome, raw result or None)."""

    async def one(p: Prepared) -> tuple[Prepared, Outcome, object]:
        box: list[object] = []

        async def call(b: Any) -> object:
            result = await p.call(b)
            box.append(result)
            return result

        outcome = await _one(b, p.name, True, call, bound)
        return p, outcome, (box[0] if box else None)

    if concurrent:
        return list(await asyncio.gather(*(one(p) for p in calls)))
    return [await one(p) for p in calls]
