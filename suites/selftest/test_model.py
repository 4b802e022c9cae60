"""The executable model and the memory backend say the same thing.

The memory backend is the reference implementation; the model is the contract's
executable definition (docs/contract.md). Hypothesis-generated programs of every
operation run on both, on a fake clock that stops at exact expiry instants, and every
answer must be equal: timestamps included, to the bit (tolerance 0).
The pinned points of docs/contract.md are spelled out once more on the model alone.
"""

from __future__ import annotations

import math

import pytest

from authconform.backends import memory
from authconform.contract import (
    AttemptStatus,
    BackendSettings,
    ChallengeRecord,
    CodeRecord,
    Conflict,
    ConsumeStatus,
    InvalidArgument,
    RefreshTokenRecord,
    RotateStatus,
    SessionRecord,
    StateRecord,
)
from authconform.contract.model import UNCHECKED, ContractModel, same_result
from authconform.race.machine import MachineFailure, Target, run_machine


def test_memory_backend_answers_exactly_as_the_model() -> None:
    target = Target(
        name="memory",
        factory=memory.factory,
        settings=BackendSettings(namespace="ac_selftest_model"),
        uses_clock=True,
        tolerance=0.0,
        skew=0.0,
    )
    try:
        run_machine(target, profile="ci")
    except MachineFailure as exc:  # pragma: no cover - the message is the evidence
        pytest.fail(f"memory and the model disagree (seed {exc.seed}):\n{exc}", pytrace=False)


CODE = CodeRecord("app", "bob", "g1")


def test_expiry_is_half_open_for_every_operation() -> None:
    """At exactly expires_at every operation sees the record as expired."""
    m = ContractModel(now=100.0)
    m.apply("put_code", ("c", CODE, 10.0))
    m.apply("put_refresh_token", ("r", RefreshTokenRecord("app", "bob", "g1"), 10.0))
    m.apply("put_challenge", ("ch", "123456", ChallengeRecord("bob"), 10.0))
    m.apply("create_session", ("s", SessionRecord("bob"), 10.0, 20.0))
    m.apply("hit", ("ip", 1, 10.0))
    just_before = math.nextafter(110.0, 0.0)
    assert m.copy().apply("get_code", ("c",), now=just_before) is not None
    assert m.copy().apply("stats", (), now=just_before)["rate_limits"] == 1
    at = m.copy()
    at.now = 110.0
    assert at.run("get_code", ("c",)) is None
    assert at.copy().run("consume_code", ("c",)).status is ConsumeStatus.EXPIRED
    assert at.copy().run("rotate_refresh_token", ("r", "r2", 5.0)).status is RotateStatus.EXPIRED
    assert at.copy().run("attempt_challenge", ("ch", "x")).status is AttemptStatus.EXPIRED
    assert at.copy().run("touch_session", ("s", 5.0)) is None
    assert at.copy().run("list_sessions", ("bob",)) == []
    assert at.copy().run("revoke_session", ("s",)) is False
    assert at.copy().run("revoke_grant", ("g1",)) == 0
    stats = at.copy().run("stats")
    assert stats["codes"] == stats["refresh_tokens"] == stats["sessions"] == 0
    assert stats["rate_limits"] == 0
    assert at.copy().run("purge_expired") == 4  # code, token, challenge, session; not the window


def test_ids_compare_by_exact_code_points() -> None:
    m = ContractModel()
    m.apply("put_code", ("caf\u00e9", CODE, 10.0))
    for other in ("cafe\u0301", "CAF\u00c9", "caf", "caf*", "caf\u00e9 "):
        assert m.copy().run("consume_code", (other,)).status is ConsumeStatus.NOT_FOUND
    m.apply("create_session", ("s1", SessionRecord("bobby"), 10.0, 10.0))
    for subject in ("bob", "bob*", "Bobby", "b%", "b_bby"):
        assert m.run("list_sessions", (subject,)) == []


def test_consumed_and_rotated_records_count_as_live() -> None:
    m = ContractModel()
    m.apply("put_code", ("c", CODE, 10.0))
    m.apply("consume_code", ("c",))
    m.apply("put_refresh_token", ("a", RefreshTokenRecord("app", "bob", "g1"), 10.0))
    m.apply("rotate_refresh_token", ("a", "b", 10.0))
    stats = m.run("stats")
    assert stats["codes"] == 1 and stats["refresh_tokens"] == 2
    assert m.run("revoke_grant", ("g1",)) == 2  # the rotated one and its successor


def test_reuse_revokes_the_whole_chain() -> None:
    m = ContractModel()
    m.apply("put_refresh_token", ("a", RefreshTokenRecord("app", "bob", "g1"), 10.0))
    m.apply("rotate_refresh_token", ("a", "b", 10.0))
    m.apply("rotate_refresh_token", ("b", "c", 10.0))
    assert m.run("rotate_refresh_token", ("a", "x", 10.0)).status is RotateStatus.REUSED
    assert m.run("get_refresh_token", ("c",)).revoked
    assert m.run("rotate_refresh_token", ("c", "y", 10.0)).status is RotateStatus.REVOKED


def test_delete_client_revokes_what_was_issued_to_it() -> None:
    m = ContractModel()
    m.apply("create_client", ("app", {}))
    m.apply("put_code", ("c", CODE, 10.0))
    m.apply("put_state", ("st", StateRecord("app"), 10.0))
    m.apply("put_refresh_token", ("r", RefreshTokenRecord("app", "bob", "g1"), 10.0))
    m.apply("put_code", ("other", CodeRecord("App", "bob", "g2"), 10.0))
    assert m.run("delete_client", ("app",)) is True
    assert m.run("consume_code", ("c",)).status is ConsumeStatus.NOT_FOUND
    assert m.run("consume_state", ("st",)).status is ConsumeStatus.NOT_FOUND
    assert m.run("rotate_refresh_token", ("r", "r2", 5.0)).status is RotateStatus.REVOKED
    assert m.run("consume_code", ("other",)).status is ConsumeStatus.CONSUMED


def test_forgotten_after_the_retention() -> None:
    m = ContractModel(now=0.0, expired_retention=2.0)
    m.apply("put_code", ("c", CODE, 1.0))
    assert m.copy().run("consume_code", ("c",), now=2.5).status is ConsumeStatus.EXPIRED
    assert isinstance(m.copy().run("put_code", ("c", CODE, 1.0), now=2.5), Conflict)
    assert m.copy().run("consume_code", ("c",), now=3.0).status is ConsumeStatus.NOT_FOUND
    assert m.copy().run("purge_expired", now=3.0) == 0


def test_errors_and_unchecked_answers() -> None:
    m = ContractModel()
    assert isinstance(m.run("put_code", ("", CODE, 1.0)), InvalidArgument)
    assert isinstance(m.run("hit", ("k", 0, 1.0)), InvalidArgument)
    assert m.run("health") is UNCHECKED and same_result(UNCHECKED, object())
    assert not same_result(InvalidArgument("x"), Conflict("x"))
    with pytest.raises(ValueError, match="unknown StorageBackend operation"):
        m.apply("flushall")


def test_same_result_allows_timestamps_within_the_tolerance_only() -> None:
    a = ContractModel(now=5.0).apply("put_code", ("c", CODE, 1.0))
    later = ContractModel(now=5.0004).apply("put_code", ("c", CODE, 1.0))
    assert same_result(a, later, tolerance=0.001)
    assert not same_result(a, later, tolerance=0.0001)
    other = ContractModel(now=5.0).apply("put_code", ("c", CodeRecord("x", "bob", "g1"), 1.0))
    assert not same_result(a, other, tolerance=10.0)
