"""No secret in any output: a registry of the run's secrets, redaction at the logging layer.

- ``register(value, kind)``: a secret this process has seen (a token, code, verifier or
  client secret). The live suite's ``Redactor`` feeds every secret it learns here; the
  reference server feeds every secret it issues. The registry is bounded (the oldest
  entries go first), so a long-running ``authconform serve`` does not grow with it.
- ``redact(text)``: every registered secret (and its URL-encoded spellings) becomes
  ``[redacted:<kind>]``; then the reports' patterns (``authconform.redaction._patterns``) catch
  secrets nobody registered: the values of ``code=``, ``access_token=``,
  ``client_secret=``, ``code_verifier=``, ``token=`` ... (query strings, form bodies), the
  same members of JSON objects and Python reprs, and ``Bearer``/``Basic`` credentials
  anywhere (httpcore logs headers as ``(b'authorization', b'Bearer ...')``). A response
  header is logged before anyone could register the code it carries: the patterns are
  what redacts it.
- ``install()`` / ``uninstall()``: a ``logging`` record factory that redacts every record
  when it is made, whatever the logger (httpx, httpcore, redis, psycopg, uvicorn, mcp,
  yours) and whatever handler later prints it (pytest's live log, its captured-log
  sections, a file): message, arguments, exception text and stack. Installs nest.

Stdlib only: the pytest plugin and the server import it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, quote_plus

# one set of shapes for logs and reports: the reports' pattern redactor (stdlib only)
from authconform.redaction._patterns import redact as _patterns

__all__ = [
    "MAX_SECRETS",
    "install",
    "installed",
    "redact",
    "register",
    "registered",
    "uninstall",
]

#: most secrets kept for exact redaction (the patterns apply whatever the count)
MAX_SECRETS = 50_000
_MIN_LEN = 6

_lock = threading.Lock()
_values: OrderedDict[str, str] = OrderedDict()
_pattern: re.Pattern[str] | None = None


def register(value: str | None, kind: str = "secret") -> None:
    """Remember ``value`` (and its URL-encoded spellings) as a secret of ``kind``."""
    global _pattern
    if not value or len(value) < _MIN_LEN:
        return
    with _lock:
        for variant in {value, quote(value, safe=""), quote_plus(value)}:
            if variant not in _values:
                _values[variant] = kind
                _pattern = None
        while len(_values) > MAX_SECRETS:
            _values.popitem(last=False)


def registered() -> dict[str, str]:
    """A copy of value -> kind (for self-tests; never print it)."""
    with _lock:
        return dict(_values)


def _compiled() -> tuple[re.Pattern[str] | None, dict[str, str]]:
    global _pattern
    with _lock:
        if _pattern is None and _values:
            ordered = sorted(_values, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(v) for v in ordered))
        return _pattern, _values


def redact(text: str) -> str:
    """``text`` with every registered secret and every pattern match masked."""
    if not text:
        return text
    pattern, kinds = _compiled()
    if pattern is not None:
        text = pattern.sub(lambda m: f"[redacted:{kinds.get(m.group(0), 'secret')}]", text)
    return _patterns(text)


# the logging layer -----------------------------------------------------------------------

_installs = 0
_previous: Any = None


def _redacted_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: leave it for logging to report
        return record
    clean = redact(message)
    if clean != message:
        # keep the record's shape where redacting its parts gives the same text (uvicorn's
        # access formatter unpacks ``args``); otherwise the redacted message replaces it
        msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
        args = _redact_args(record.args)
        try:
            same = (str(msg) % args if args else str(msg)) == clean
        except Exception:  # noqa: BLE001 - then the flat message it is
            same = False
        record.msg, record.args = (msg, args) if same else (clean, None)
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def _redact_args(args: Any) -> Any:
    if isinstance(args, tuple):
        return tuple(redact(a) if isinstance(a, str) else a for a in args)
    if isinstance(args, dict):
        return {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
    return args


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    return _redacted_record(_previous(*args, **kwargs))


def install() -> None:
    """Redact every log record of this process from now on (nested calls count)."""
    global _installs, _previous
    with _lock:
        _installs += 1
        if _installs > 1:
            return
        _previous = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_factory)


def uninstall() -> None:
    """Undo one ``install``; the last one restores the previous record factory."""
    global _installs, _previous
    with _lock:
        if _installs == 0:
            return
        _installs -= 1
        if _installs == 0:
            if logging.getLogRecordFactory() is _factory:
                logging.setLogRecordFactory(_previous)
            _previous = None


def installed() -> bool:
    """True while the record factory redacts."""
    return _installs > 0
