"""Storage at rest: a dump of the store yields no usable secret (only SHA-256 hashes)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Callable

from authconform.contract import (
    AccessTokenRecord,
    BackendSettings,
    Capability,
    ChallengeRecord,
    CodeRecord,
    RefreshTokenRecord,
    ResetTokenRecord,
    SessionRecord,
    StateRecord,
    StorageBackend,
)
from authconform.markers import requires, spec
from authconform.suites.contract._helpers import fresh_namespace, uid

Factory = Callable[..., StorageBackend]


def encodings(secret: str) -> dict[str, str]:
    """The forms a secret could leak in: as is, hex of its bytes, base64 of its bytes."""
    raw = secret.encode("utf-8")
    return {
        "clear text": secret,
        "hex": raw.hex(),
        "base64": base64.b64encode(raw).decode("ascii").rstrip("="),
    }


@spec("CONTRACT-secrets-hashed-at-rest", level="MUST")
@requires(
    Capability.ADMIN,
    Capability.CLIENTS,
    Capability.CODES,
    Capability.TOKENS,
    Capability.REFRESH,
    Capability.STATES,
    Capability.CHALLENGES,
    Capability.RESET_TOKENS,
    Capability.SESSIONS,
)
async def test_dump_of_the_store_contains_no_secret_in_clear(
    backend_factory: Factory, backend_settings: BackendSettings
) -> None:
    """After storing one of every secret, dump_raw() shows none of them, only their hashes.

    Codes, access and refresh tokens (also a rotated one), states, reset tokens,
    challenge ids and answers, session ids and client secrets are all 256-bit random
    values: a store that keeps SHA-256 of them leaks nothing a thief could replay.
    """
    backend = backend_factory(fresh_namespace(backend_settings))
    values = {
        name: secrets.token_urlsafe(32)
        for name in (
            "code",
            "access token",
            "refresh token",
            "rotated-to refresh token",
            "state",
            "reset token",
            "challenge id",
            "challenge answer",
            "session id",
            "client secret",
            "replaced client secret",
            "updated client secret",
        )
    }
    client_id = "client-" + secrets.token_urlsafe(8)
    subject, grant = "user-" + secrets.token_urlsafe(8), "grant-" + secrets.token_urlsafe(8)

    await backend.create_client(client_id, {"client_name": "x"}, secret=values["client secret"])
    other_client = "client-" + secrets.token_urlsafe(8)
    await backend.create_client(other_client, {}, secret=values["replaced client secret"])
    await backend.update_client(other_client, {"b": 1}, secret=values["updated client secret"])
    await backend.put_code(
        values["code"], CodeRecord(client_id=client_id, subject=subject, grant_id=grant), 60.0
    )
    await backend.put_access_token(
        values["access token"],
        AccessTokenRecord(client_id=client_id, subject=subject, grant_id=grant),
        60.0,
    )
    await backend.put_refresh_token(
        values["refresh token"],
        RefreshTokenRecord(client_id=client_id, subject=subject, grant_id=grant),
        60.0,
    )
    await backend.rotate_refresh_token(
        values["refresh token"], values["rotated-to refresh token"], 60.0
    )
    await backend.put_state(values["state"], StateRecord(client_id=client_id), 60.0)
    await backend.put_reset_token(values["reset token"], ResetTokenRecord(subject=subject), 60.0)
    await backend.put_challenge(
        values["challenge id"], values["challenge answer"], ChallengeRecord(subject=subject), 60.0
    )
    await backend.create_session(values["session id"], SessionRecord(subject=subject), 60.0, 120.0)

    dump = await backend.dump_raw()
    assert dump.strip(), "dump_raw() returned nothing: it must show what the store holds"
    assert client_id in dump, "dump_raw() does not show the stored records (no client id)"
    leaks = [
        f"{name} ({form})"
        for name, value in values.items()
        for form, encoded in encodings(value).items()
        if encoded in dump
    ]
    assert not leaks, f"the store keeps these secrets recoverable: {', '.join(leaks)}"


#: runs of characters a digest, salt or key could be written with (hex, base64, base64url)
#: long enough that timestamps and counters never match (at most 17 digits in a row)
_TOKENS = re.compile(r"[A-Za-z0-9+/_-]{32,}")


def _tokens(dump: str, namespace: str) -> Counter[str]:
    return Counter(_TOKENS.findall(dump.replace(namespace, " ")))


@spec("CONTRACT-secrets-hashed-at-rest", level="MUST")
@requires(Capability.ADMIN, Capability.CHALLENGES)
async def test_equal_challenge_answers_are_not_recoverable_from_a_dump(
    backend_factory: Factory, backend_settings: BackendSettings
) -> None:
    """Two challenges with the same 6-digit answer: the dump shows neither the answer nor
    SHA-256(answer), and the two stored values differ.

    A 6-digit answer has 10**6 values: a bare SHA-256 of it is reversed from a dump by
    hashing every candidate, and equal answers give equal digests. The answer is hashed
    together with the challenge id (a secret the store keeps only hashed), so neither
    works.
    """
    namespace = fresh_namespace(backend_settings)
    backend = backend_factory(namespace)
    answer = f"{secrets.randbelow(10**6):06d}"
    first, second = uid(), uid()
    await backend.put_challenge(first, answer, ChallengeRecord(subject="user-" + uid()), 60.0)
    after_first = await backend.dump_raw()
    await backend.put_challenge(second, answer, ChallengeRecord(subject="user-" + uid()), 60.0)
    dump = await backend.dump_raw()
    assert dump.strip(), "dump_raw() returned nothing: it must show what the store holds"

    digest = hashlib.sha256(answer.encode("utf-8")).digest()
    guessable = {
        "SHA-256(answer) hex": digest.hex(),
        "SHA-256(answer) base64": base64.b64encode(digest).decode("ascii").rstrip("="),
        "SHA-256(answer) base64url": base64.urlsafe_b64encode(digest).decode("ascii").rstrip("="),
    }
    found = [name for name, form in guessable.items() if form.lower() in dump.lower()]
    if re.search(rf"(?<![0-9A-Za-z.]){answer}(?![0-9A-Za-z])", dump):
        found.append("the answer in clear")
    assert not found, (
        f"challenge answer stored recoverably: the dump holds {', '.join(found)} "
        f"(CONTRACT-secrets-hashed-at-rest: hash the answer together with the challenge id)"
    )

    # what the second put added repeats nothing of what the first one stored
    before, now = _tokens(after_first, namespace), _tokens(dump, namespace)
    repeated = sum(1 for t, n in before.items() if now[t] > n)  # count only: no digests shown
    assert repeated == 0, (
        f"equal challenge answers are stored as equal values ({repeated} value(s) of the first "
        f"challenge repeated in the second): the stored answer must be salted/keyed per "
        f"challenge (CONTRACT-secrets-hashed-at-rest)"
    )
