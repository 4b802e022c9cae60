"""Argument checks, hashing and (de)serialisation shared by every backend.

A backend calls these first, so ``InvalidArgument`` is raised before the store is touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from authconform.contract._records import JSON
from authconform.errors import InvalidArgument

MAX_ID_LENGTH = 512
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_TTL = 10 * 365 * 86400.0
MAX_LIMIT = 10**9
NAMESPACE_RE = re.compile(r"^[a-z0-9_]{1,40}$")

# The kinds of record every backend stores, in the order stats() reports them.
KINDS = (
    "clients",
    "codes",
    "access_tokens",
    "refresh_tokens",
    "states",
    "challenges",
    "reset_tokens",
    "sessions",
    "rate_limits",
)

T = TypeVar("T")


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a usable id: a non-empty str, <= 512 chars, no NUL."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(f"{what} is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    if "\x00" in value:
        raise InvalidArgument(f"{what} must not contain NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} is not valid Unicode (lone surrogate)") from None
    return value


def check_ttl(ttl: object, what: str = "ttl") -> float:
    """Return ``ttl`` as float if 0 < ttl <= ten years and finite."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidArgument(f"{what} must be a number of seconds, got {type(ttl).__name__}")
    ttl = float(ttl)
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidArgument(f"{what} must be a finite number of seconds > 0, got {ttl!r}")
    if ttl > MAX_TTL:
        raise InvalidArgument(f"{what} {ttl} exceeds the limit of {MAX_TTL:.0f} s")
    return ttl


def check_positive_int(value: object, what: str) -> int:
    """Return ``value`` if it is an int in [1, 10**9]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidArgument(f"{what} must be an integer from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def check_namespace(namespace: object) -> str:
    """Return ``namespace`` if it matches ``[a-z0-9_]{1,40}``."""
    if not isinstance(namespace, str) or not NAMESPACE_RE.match(namespace):
        raise InvalidArgument(f"namespace must match [a-z0-9_]{{1,40}}, got {namespace!r}")
    return namespace


def dumps_json(value: JSON, what: str = "payload") -> str:
    """Serialise a JSON payload (ASCII, NUL- and surrogate-safe); enforce the size limit."""
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} is not JSON-serialisable: {exc}") from None
    if len(text) > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"{what} is {len(text)} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}"
        )
    return text


def check_payload(value: object, what: str = "payload") -> Mapping[str, JSON]:
    """Return ``value`` if it is a JSON object within the size limit."""
    if type(value) is dict and not value:
        return value
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{what} must be a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidArgument(f"{what} keys must be str, got {type(key).__name__}")
    dumps_json(value, what)
    return value


_ID_FIELDS = frozenset({"client_id", "subject", "grant_id"})
_PAYLOAD_FIELDS = frozenset({"extra", "metadata"})
_STR_FIELDS = frozenset({"redirect_uri", "code_challenge", "code_challenge_method", "resource"})


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def check_record(record: object, cls: type[T]) -> T:
    """Check a record's type, string ids, strings and JSON payloads (sizes included)."""
    if type(record) is not cls:
        raise InvalidArgument(f"record must be a {cls.__name__}, got {type(record).__name__}")
    for name in _field_names(cls):
        value = getattr(record, name)
        if name in _ID_FIELDS:
            check_id(value, name)
        elif name in _PAYLOAD_FIELDS:
            check_payload(value, name)
        elif name in _STR_FIELDS:
            if value is not None and not isinstance(value, str):
                raise InvalidArgument(f"{name} must be a str")
            if isinstance(value, str) and len(value) > 4 * MAX_ID_LENGTH:
                raise InvalidArgument(f"{name} is longer than {4 * MAX_ID_LENGTH} characters")
        elif name == "scopes":
            if not isinstance(value, tuple | list) or not all(isinstance(x, str) for x in value):
                raise InvalidArgument("scopes must be a tuple of str")
            if sum(len(x) for x in value) > 4 * MAX_ID_LENGTH:
                raise InvalidArgument(f"scopes are longer than {4 * MAX_ID_LENGTH} characters")
        elif name == "max_attempts":
            check_positive_int(value, "max_attempts")
    return record


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a secret (tokens, codes, client secrets are 128+ bit random)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str, secret_hash: str | None) -> bool:
    """Constant-time check of ``secret`` against a stored hash."""
    if secret_hash is None:
        return False
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def answer_hash(challenge_id: str, answer: str) -> str:
    """The stored form of a challenge answer: SHA-256 of ``challenge_id NUL answer``.

    Answers are short (a 6-digit code has 10**6 values), so a bare SHA-256 of the answer
    is reversed from a dump by a lookup table in well under a second. The challenge id is
    a 128+ bit secret that the store keeps only as ``hash_secret(challenge_id)``, so
    prefixing it makes the digest unguessable without the id (a per-challenge secret
    salt). Both are checked ids (no NUL), so the encoding is unambiguous.
    """
    return hash_secret(f"{challenge_id}\x00{answer}")


def answer_matches(challenge_id: str, answer: str, stored_hash: str | None) -> bool:
    """Constant-time check of an answer against ``answer_hash`` output."""
    if stored_hash is None:
        return False
    return hmac.compare_digest(answer_hash(challenge_id, answer), stored_hash)


def record_to_dict(record: Any) -> dict[str, JSON]:
    """A record as a plain JSON-ready dict (payload mappings become dicts)."""
    out: dict[str, JSON] = {name: getattr(record, name) for name in _field_names(type(record))}
    for name in _PAYLOAD_FIELDS:
        value = out.get(name)
        if value is not None and type(value) is not dict:
            out[name] = dict(value)
    if "scopes" in out:
        out["scopes"] = list(out["scopes"])
    return out


def record_from_dict(cls: type[T], data: Mapping[str, JSON]) -> T:
    """Rebuild a record from ``record_to_dict`` output; unknown keys are ignored."""
    kwargs: dict[str, Any] = {name: data[name] for name in _field_names(cls) if name in data}
    if "scopes" in kwargs:
        kwargs["scopes"] = tuple(kwargs["scopes"])
    return cls(**kwargs)


_FIELD_SETS: dict[type, frozenset[str]] = {}


def record_from_json_with(cls: type[T], text: str | bytes, **columns: Any) -> T:
    """Rebuild a record from stored JSON with ``columns`` laid over it.

    Backends that keep mutable fields (flags, expiry, attempts) in their own columns or
    hash fields pass them here; they override whatever the JSON holds. Every call returns
    a fresh object tree. Unknown keys are ignored, as in ``record_from_dict``.
    """
    data = _loads(text)
    data.update(columns)
    names = _FIELD_SETS.get(cls)
    if names is None:
        names = _FIELD_SETS[cls] = frozenset(_field_names(cls))
    if not names.issuperset(data):
        return record_from_dict(cls, data)
    if "scopes" in data:
        data["scopes"] = tuple(data["scopes"])
    return cls(**data)


def record_to_json(record: Any) -> str:
    """Serialise a record (its payloads were size-checked by ``check_record``)."""
    return _ENCODER.encode(record_to_dict(record))


def record_from_json(cls: type[T], text: str | bytes) -> T:
    """Deserialise a record; every call returns a fresh object tree."""
    return record_from_dict(cls, _loads(text))


_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))
_loads = json.loads
