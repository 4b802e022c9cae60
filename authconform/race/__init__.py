"""Concurrency: the history of concurrent operations and its linearizability checker."""

from authconform.race.history import Operation, describe
from authconform.race.linearizability import Verdict, check

__all__ = ["Operation", "Verdict", "check", "describe"]
