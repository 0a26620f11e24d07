"""Small helpers shared by the locker tests."""

from __future__ import annotations

from typing import Any


class Holder:
    """Records how often its lock-release callback was called."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self) -> None:
        self.asked += 1


def held(d: Any) -> Any:
    """The lock a fired Deferred holds (fails the test if it has not fired)."""
    results = []

    def keep(result: Any) -> Any:
        results.append(result)
        return result

    d.addCallback(keep)
    assert results, "lock was not acquired"
    return results[0]


def failure_of(d: Any) -> Any:
    """The failure of a failed Deferred (fails the test if it has not failed)."""
    failures: list = []
    d.addErrback(failures.append)
    assert failures, "Deferred has not failed"
    return failures[0]
