"""The linearizability checker: hand-made histories with known verdicts.

Linearizable histories pass, the classic non-linearizable ones (two winners for one
code, a read that sees a value before its write was called) are refuted with the
operations that cannot be ordered, and a search past its bound is ``unknown``, never a
pass.
"""

from __future__ import annotations

from authconform.contract import (
    CodeRecord,
    ConsumeResult,
    ConsumeStatus,
    RefreshTokenRecord,
    RotateStatus,
    StorageUnavailable,
)
from authconform.contract.model import ContractModel
from authconform.race import Operation, check

CODE = CodeRecord("app", "bob", "g1")


def _with_code(now: float = 0.0) -> tuple[ContractModel, CodeRecord]:
    m = ContractModel(now=now)
    stored = m.apply("put_code", ("c1", CODE, 100.0))
    return m, stored


def _consumed(stored: CodeRecord, status: ConsumeStatus) -> ConsumeResult[CodeRecord]:
    from dataclasses import replace

    return ConsumeResult(status, replace(stored, consumed=True))


def test_one_winner_among_overlapping_consumes_is_linearizable() -> None:
    m, stored = _with_code()
    won = _consumed(stored, ConsumeStatus.CONSUMED)
    lost = _consumed(stored, ConsumeStatus.ALREADY_USED)
    history = [
        Operation(p, "consume_code", ("c1",), {}, 1.0 + p / 10, 3.0, won if p == 2 else lost)
        for p in range(5)
    ]
    verdict = check(history, initial=m)
    assert verdict.ok and verdict.outcome == "linearizable", verdict
    assert history[verdict.order[0]].result is won


def test_two_winners_for_one_code_are_not_linearizable() -> None:
    m, stored = _with_code()
    won = _consumed(stored, ConsumeStatus.CONSUMED)
    history = [
        Operation(1, "consume_code", ("c1",), {}, 1.0, 3.0, won),
        Operation(2, "consume_code", ("c1",), {}, 1.5, 2.5, won),
    ]
    verdict = check(history, initial=m)
    assert verdict.outcome == "not-linearizable" and not verdict.ok
    assert set(verdict.order) | set(verdict.stuck) == {0, 1}
    assert "the model answers ConsumeResult(status=ALREADY_USED" in verdict.detail


def test_a_read_before_its_write_was_called_is_not_linearizable() -> None:
    empty = ContractModel(now=0.0)
    stored = ContractModel(now=3.5).apply("put_code", ("c2", CODE, 100.0))
    history = [
        Operation(1, "get_code", ("c2",), {}, 1.0, 2.0, stored),
        Operation(2, "put_code", ("c2", CODE, 100.0), {}, 3.0, 4.0, stored),
    ]
    verdict = check(history, initial=empty)
    assert verdict.outcome == "not-linearizable"
    assert verdict.stuck == (0,)
    # the same read overlapping the write is fine
    overlapping = [history[0].__class__(**{**history[0].__dict__, "ret": 3.6}), history[1]]
    assert check(overlapping, initial=empty).ok


def test_an_operation_with_unknown_outcome_may_or_may_not_have_happened() -> None:
    m, stored = _with_code()
    won = _consumed(stored, ConsumeStatus.CONSUMED)
    used = _consumed(stored, ConsumeStatus.ALREADY_USED)
    lost_reply = StorageUnavailable("reply lost")
    took_effect = [
        Operation(1, "consume_code", ("c1",), {}, 1.0, 2.0, lost_reply),
        Operation(2, "consume_code", ("c1",), {}, 3.0, 4.0, used),
    ]
    assert check(took_effect, initial=m).ok
    did_not = [took_effect[0], Operation(2, "consume_code", ("c1",), {}, 3.0, 4.0, won)]
    assert check(did_not, initial=m).ok


def test_rotation_racing_reuse_detection() -> None:
    m = ContractModel(now=0.0)
    m.apply("put_refresh_token", ("a", RefreshTokenRecord("app", "bob", "g1"), 100.0))
    rotated = m.copy().apply("rotate_refresh_token", ("a", "b", 100.0), now=1.0)
    both = [
        Operation(1, "rotate_refresh_token", ("a", "b", 100.0), {}, 1.0, 2.0, rotated),
        Operation(2, "rotate_refresh_token", ("a", "c", 100.0), {}, 1.0, 2.0, rotated),
    ]
    assert rotated.status is RotateStatus.ROTATED
    assert check(both, initial=m).outcome == "not-linearizable"


def test_partitions_are_checked_independently() -> None:
    m = ContractModel(now=0.0)
    history = []
    for i in range(12):
        stored = ContractModel(now=1.0).apply("put_code", (f"k{i}", CODE, 100.0))
        history.append(Operation(i, "put_code", (f"k{i}", CODE, 100.0), {}, 1.0, 2.0, stored))
    verdict = check(history, initial=m)
    assert verdict.ok and verdict.states <= 2 * len(history)


def test_the_search_bound_gives_unknown_never_a_pass() -> None:
    # twelve overlapping puts and a stats() that counts thirteen codes: refuted only
    # after trying every subset of the puts before the stats (4096 states)
    empty = ContractModel(now=0.0)
    history = []
    for i in range(12):
        stored = ContractModel(now=1.0).apply("put_code", (f"k{i}", CODE, 100.0))
        history.append(Operation(i, "put_code", (f"k{i}", CODE, 100.0), {}, 1.0, 2.0, stored))
    impossible = {**ContractModel().apply("stats"), "codes": 13}
    history.append(Operation(99, "stats", (), {}, 1.0, 2.0, impossible))
    verdict = check(history, initial=empty, max_states=500)
    assert verdict.outcome == "unknown" and not verdict.ok, verdict
    assert "search bound of 500 states" in verdict.detail
    assert check(history, initial=empty, max_states=20_000).outcome == "not-linearizable"
