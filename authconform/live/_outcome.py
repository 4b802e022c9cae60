"""Outcomes a live check reports besides pass and fail, and the run's deferred findings.

- ``unavailable`` / ``not_advertised`` / ``not_applicable`` / ``disabled``: skip the check
  with a ``<category>: <sentence>`` reason. They raise pytest's skip exception, which is
  no ``Exception``: code that catches ``LiveFailure`` (or ``Exception``, like a driver
  wrapper) lets it through, so a precondition that fails anywhere ends the check as what
  it is.
- ``Finding``: a breach seen by a check whose own rule held, filed against the rule it
  breaks (a refused replay answered with the wrong error code is RFC 6749 5.2's business,
  not the single-use check's). Findings are reported once, by the check that owns the
  rule, at the end of the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from authconform.live._record import Exchange

__all__ = [
    "Finding",
    "disabled",
    "not_advertised",
    "not_applicable",
    "skip",
    "unavailable",
]

CATEGORIES = ("not-applicable", "unavailable", "disabled", "not-advertised")


def skip(category: str, sentence: str) -> NoReturn:
    """Skip the running check with ``<category>: <sentence>``.

    The skip is reported at the check (``-rs`` names the check's file, not this one).
    """
    import pytest

    if category not in CATEGORIES:
        raise ValueError(f"skip category {category!r} is not one of {', '.join(CATEGORIES)}")
    try:
        raise pytest.skip.Exception(f"{category}: {sentence}", _use_item_location=True)
    except TypeError:  # a pytest without the keyword: the helper's location, same reason
        pytest.skip(f"{category}: {sentence}")


def unavailable(sentence: str) -> NoReturn:
    """The check cannot run here: a precondition failed (say which, and how to fix it)."""
    skip("unavailable", sentence)


def not_advertised(sentence: str) -> NoReturn:
    """The target's metadata does not offer the feature the check needs."""
    skip("not-advertised", sentence)


def not_applicable(sentence: str) -> NoReturn:
    """The rule does not apply to this target (its document does not)."""
    skip("not-applicable", sentence)


def disabled(sentence: str) -> NoReturn:
    """An option turned the check off (say which option turns it on)."""
    skip("disabled", sentence)


@dataclass
class Finding:
    """A breach of ``spec`` seen while another check ran (reported by the rule's own check)."""

    spec: str
    observed: str
    expected: str
    exchanges: list[Exchange] = field(default_factory=list)
    seen_by: str = ""

    def key(self) -> tuple[str, str]:
        """Findings with the same key are one root cause (reported once, counted)."""
        return self.spec, self.observed
