"""What one pytest run of ours shares: the resolved selection, the event loop, our items.

- ``run_config(config)``: the backends, settings and targets resolved at configure time.
- ``is_ours(path)``: whether a test file belongs to the shipped suites (our policies apply
  to those items only; a user's own tests in the same run keep pytest's behaviour).
- ``run(coro)`` and ``async_fixture``: authconform runs its coroutine checks and fixtures
  on one event loop per session, itself. It neither needs nor disturbs pytest-asyncio: a
  host project's asyncio mode (strict or auto) and loop scopes never see our checks, which
  reach pytest as plain functions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from authconform.contract import BackendSettings

__all__ = [
    "RunConfig",
    "SUITES_DIR",
    "async_fixture",
    "close_loop",
    "is_ours",
    "open_loop",
    "run",
    "run_config",
    "set_run_config",
    "syncify",
]

T = TypeVar("T")

#: the directory of the shipped suites (``authconform/suites``)
SUITES_DIR = Path(__file__).resolve().parent / "suites"


@dataclass
class RunConfig:
    """What the plugin resolved at configure time.

    ``specs`` are the selected backends (``authconform.backends._registry.BackendSpec``),
    ``backend_source`` says where ``--backend`` came from (cli, env, ini, default),
    ``server_urls`` the live target's instances (empty: the reference server).
    """

    specs: list[Any]
    settings: BackendSettings
    backend_source: str = "default"
    namespace_source: str = "random"
    server_urls: list[str] = field(default_factory=list)


_RUN = pytest.StashKey[RunConfig]()


def set_run_config(config: pytest.Config, run: RunConfig) -> None:
    """Store the run's configuration (the plugin does, in ``pytest_configure``)."""
    config.stash[_RUN] = run


def run_config(config: pytest.Config) -> RunConfig:
    """The resolved configuration of this run."""
    return config.stash[_RUN]


def is_ours(path: Path | str | None) -> bool:
    """True for a file of the shipped suites (``authconform/suites/...``)."""
    if path is None:
        return False
    try:
        return Path(path).resolve().is_relative_to(globals()["SUITES_DIR"])
    except (OSError, ValueError):
        return False


# the session event loop -------------------------------------------------------------
#
# One loop per pytest session. Sessions nest (a self-test runs pytest in-process inside
# a check), so the loops form a stack: ``open_loop`` at configure, ``close_loop`` at
# unconfigure closes only the innermost one and the outer session's loop stays usable.

_loops: list[asyncio.Runner | None] = []


def open_loop() -> None:
    """Start a session's loop scope (the plugin does, in ``pytest_configure``)."""
    _loops.append(None)


def _loop_runner() -> asyncio.Runner:
    if not _loops:
        _loops.append(None)
    runner = _loops[-1]
    if runner is None:
        runner = _loops[-1] = asyncio.Runner()
    return runner


def run(coro: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """Run ``coro`` to completion on the session loop (from synchronous code only).

    If the run is interrupted from outside the loop (Ctrl-C, a SIGTERM turned into an
    interrupt, a pytest-timeout alarm), the coroutine is cancelled and unwound (its
    ``finally`` blocks run) before the exception goes on: it never resumes later, in the
    middle of another check's or fixture's teardown.
    """
    runner = _loop_runner()
    tasks: list[asyncio.Task[Any]] = []

    async def main() -> T:
        task = asyncio.current_task()
        if task is not None:
            tasks.append(task)
        return await coro

    try:
        return runner.run(main())
    except BaseException:
        if tasks and not tasks[0].done():
            tasks[0].cancel()
            try:
                runner.run(_settle(tasks[0]))
            except BaseException:  # noqa: BLE001 - the first interruption is the one to report
                pass
        raise


async def _settle(task: asyncio.Task[Any]) -> None:
    """Wait until ``task`` has finished (cancelled or not); its outcome is not ours to raise."""
    await asyncio.wait([task])


def close_loop() -> None:
    """Close the innermost session's loop (the plugin does at the end of the run)."""
    if _loops:
        runner = _loops.pop()
        if runner is not None:
            runner.close()


def syncify(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """A plain function running the coroutine function ``fn`` on the session loop.

    The signature (and so the fixture names pytest reads) is ``fn``'s; marks travel too.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return run(fn(*args, **kwargs))

    wrapper.authconform_coroutine = True  # type: ignore[attr-defined]
    return wrapper


def async_fixture(
    fn: Callable[..., Any] | None = None, *, scope: str = "function", **kwargs: Any
) -> Any:
    """``@async_fixture(scope=...)``: an async (generator) function as a pytest fixture.

    The fixture runs on the session loop; its teardown (after ``yield``) too. It reaches
    pytest as a plain (generator) function, so a host project's pytest-asyncio never
    handles it.
    """

    def decorate(func: Callable[..., Any]) -> Any:
        if inspect.isasyncgenfunction(func):

            @functools.wraps(func)
            def gen_wrapper(*args: Any, **kw: Any) -> Iterator[Any]:
                agen: AsyncIterator[Any] = func(*args, **kw)
                value = run(agen.__anext__())
                try:
                    yield value
                finally:
                    try:
                        run(agen.__anext__())
                    except StopAsyncIteration:
                        pass
                    else:  # pragma: no cover - a fixture bug
                        raise RuntimeError(f"async fixture {func.__name__} yielded twice")

            return pytest.fixture(scope=scope, **kwargs)(gen_wrapper)  # type: ignore[call-overload]
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            def wrapper(*args: Any, **kw: Any) -> Any:
                return run(func(*args, **kw))

            return pytest.fixture(scope=scope, **kwargs)(wrapper)  # type: ignore[call-overload]
        raise TypeError(f"async_fixture needs an async function, got {func!r}")

    return decorate(fn) if fn is not None else decorate


def prepare_module(module: Any) -> None:
    """Make a suite module's coroutine checks plain functions on the session loop.

    Test functions, methods of test classes and the inner test of a Hypothesis ``@given``
    are converted once; everything else is left as it is.
    """
    if getattr(module, "__authconform_prepared__", False):
        return
    for holder in [module, *(v for v in vars(module).values() if inspect.isclass(v)
                             and getattr(v, "__module__", None) == module.__name__)]:
        for name, obj in list(vars(holder).items()):
            if not name.startswith("test"):
                continue
            inner = getattr(getattr(obj, "hypothesis", None), "inner_test", None)
            if inner is not None and inspect.iscoroutinefunction(inner):
                obj.hypothesis.inner_test = syncify(inner)
            elif inspect.iscoroutinefunction(obj):
                setattr(holder, name, syncify(obj))
    module.__authconform_prepared__ = True
