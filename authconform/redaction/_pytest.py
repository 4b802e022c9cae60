"""pytest sub-plugin: while our checks run, no log record and no report of ours shows a secret.

- every ``logging`` record of the process is redacted when it is made
  (``authconform.redaction.install``): the DEBUG logs of httpx, httpcore, redis, psycopg
  and any other library, whichever handler prints them (``--log-cli-level``, the captured
  log sections of ``-rA``, a log file, JUnit's system-out);
- the reports of our checks (failure text, captured output sections) are redacted too;
- a pre-registered client secret given as an option is registered at configure time.

Installed when the run holds checks of ours, removed after the session's teardown (the
cleanup revokes tokens over HTTP and logs as it goes). Stdlib only at import.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from authconform import redaction
from authconform._options import setting
from authconform._session import is_ours

__all__: list[str] = []

_ON = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    """Secrets known from the options are secrets from the start."""
    redaction.register(setting(config, "client_secret"), "client_secret")


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, Any]:
    """Redact every log record while our checks run (and through the teardown after)."""
    if not session.config.option.collectonly and any(
        is_ours(getattr(item, "path", None)) for item in session.items
    ):
        redaction.install()
        session.config.stash[_ON] = True
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, Any, Any]:
    """Stop redacting once fixture teardown is over."""
    try:
        return (yield)
    finally:
        if session.config.stash.get(_ON, False):
            redaction.uninstall()
            session.config.stash[_ON] = False


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Our checks' reports carry no registered secret and no credential-shaped value."""
    report = yield
    if not is_ours(getattr(item, "path", None)):
        return report
    # replaced only where redaction changes something: other plugins may read the objects
    if isinstance(report.longrepr, tuple):
        path, lineno, reason = report.longrepr
        clean = redaction.redact(str(reason))
        if clean != str(reason):
            report.longrepr = (path, lineno, clean)
    elif report.longrepr is not None:
        text = str(report.longrepr)
        clean = redaction.redact(text)
        if clean != text:
            report.longrepr = clean
    report.sections = [(title, redaction.redact(text)) for title, text in report.sections]
    return report
