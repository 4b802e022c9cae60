"""Storage at rest: a dump of the store yields no usable secret (only SHA-256 hashes)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

import pytest

from authconform.contract import (
    AccessTokenRecord,
    Capability,
    ChallengeRecord,
    CodeRecord,
    RefreshTokenRecord,
    ResetTokenRecord,
    SessionRecord,
    StateRecord,
    StorageBackend,
)

Factory = Callable[..., StorageBackend]


def encodings(secret: str) -> dict[str, str]:
    """The forms a secret could leak in: as is, hex of its bytes, base64 of its bytes."""
    raw = secret.encode("utf-8")
    return {
        "clear text": secret,
        "hex": raw.hex(),
        "base64": base64.b64encode(raw).decode("ascii").rstrip("="),
    }


@pytest.mark.spec("CONTRACT-secrets-hashed-at-rest", level="MUST")
@pytest.mark.requires(
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
async def test_dump_of_the_store_contains_no_secret_in_clear(backend_factory: Factory) -> None:
    """After storing one of every secret, dump_raw() shows none of them, only their hashes.

    Codes, access and refresh tokens (also a rotated one), states, reset tokens,
    challenge ids and answers, session ids and client secrets are all 256-bit random
    values: a store that keeps SHA-256 of them leaks nothing a thief could replay.
    """
    backend = backend_factory("ac_" + secrets.token_hex(4))
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
