"""The MCP SDK's ``OAuthAuthorizationServerProvider`` implemented on the storage contract.

Only hashes of codes, tokens and client secrets reach the store (the backend hashes);
nothing here logs a secret. Semantics:

- Codes: ``load_authorization_code`` returns live codes *including consumed ones*, so the
  SDK's token handler runs its redirect_uri and PKCE checks and then calls
  ``exchange_authorization_code``, where ``consume_code`` is atomic: exactly one request
  gets CONSUMED; a replay (ALREADY_USED) revokes every token of the grant
  (RFC 6749 4.1.2, RFC 9700 4.5). A replay that fails those checks revokes nothing.
- Refresh: ``rotate_refresh_token`` is atomic; REUSED means the backend has already
  revoked the family (the grant), and the request gets ``invalid_grant``
  (RFC 9700 4.14.2).
- Revocation (RFC 7009): an access token is revoked alone (2.1 MAY for the refresh
  token, not done); a refresh token revokes its whole grant, access tokens included
  (2.1 SHOULD). Revoking an already rotated or revoked refresh token does nothing.
- Access tokens are bound to the requested ``resource`` (RFC 8707), or to the server's
  own MCP endpoint when none was requested.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import math
import re
import secrets
from typing import Any
from urllib.parse import urlencode, urlparse

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
    construct_redirect_uri,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl

from authconform import redaction
from authconform.contract import (
    AccessTokenRecord,
    CodeRecord,
    ConsumeStatus,
    RefreshTokenRecord,
    RotateStatus,
    StateRecord,
    StorageBackend,
)
from authconform.errors import Conflict, InvalidArgument, StorageUnavailable
from authconform.server._config import ServerConfig

__all__ = [
    "OUTAGE",
    "RAT_KEY",
    "VERIFIER_SYNTAX",
    "StoreProvider",
    "StoredAccessToken",
    "StoredClient",
    "StoredCode",
    "StoredRefreshToken",
]

#: Set by the /authorize endpoint: the SDK's authorize handler turns every exception into
#: a ``server_error`` redirect, so the provider records a store outage here and the
#: endpoint answers 503 instead.
OUTAGE: contextvars.ContextVar[list[StorageUnavailable] | None] = contextvars.ContextVar(
    "authconform_outage", default=None
)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: RFC 7636 4.1 / OAuth 2.1 A.17: code-verifier = 43*128unreserved
VERIFIER_SYNTAX = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
#: where a client's registration access token hash lives in its metadata (RFC 7592)
RAT_KEY = "_rat_sha256"
SUPPORTED_GRANTS = ("authorization_code", "refresh_token")
PENDING_TTL = 600.0  # a consent form is good for 10 minutes
CONSENT_PATH = "/consent"


def loopback_match(uri: str, registered: str) -> bool:
    """``uri`` is ``registered`` but for the port, on a loopback IP (RFC 8252 7.3).

    OAuth 2.1 4.1.1 / RFC 8252 7.3: the authorization server MUST allow any port for
    loopback IP redirect URIs (``http://127.0.0.1`` or ``http://[::1]``); everything else
    (scheme, host, path, query) still compares exactly.
    """
    a, b = urlparse(uri), urlparse(registered)
    if a.scheme != "http" or a.hostname not in ("127.0.0.1", "::1") or a.fragment:
        return False
    return (a.scheme, a.hostname, a.path, a.query, a.params) == (
        b.scheme, b.hostname, b.path, b.query, b.params
    ) and uri.split("://", 1)[0] == registered.split("://", 1)[0]


class StoredClient(OAuthClientInformationFull):
    """A registered client. ``client_secret`` is never known (only its hash is stored)."""

    has_secret: bool = False

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        """The SDK's check, plus any port for a registered loopback IP URI (RFC 8252 7.3)."""
        if redirect_uri is not None:
            for registered in self.redirect_uris or []:
                if loopback_match(str(redirect_uri), str(registered)):
                    return redirect_uri
        return super().validate_redirect_uri(redirect_uri)


class StoredCode(AuthorizationCode):
    """An authorization code as loaded from the store (consumed ones too)."""

    grant_id: str
    consumed: bool = False


class StoredRefreshToken(RefreshToken):
    """A refresh token as loaded from the store (rotated and revoked ones too)."""

    grant_id: str
    rotated: bool = False
    revoked: bool = False


class StoredAccessToken(AccessToken):
    """A live access token."""

    grant_id: str


def _ceil(value: float) -> int:
    return math.ceil(value)


def _new_secret() -> str:
    """256 bits, URL-safe (RFC 6749 10.10 asks for at least 128); redacted in our logs."""
    value = secrets.token_urlsafe(32)
    redaction.register(value, "issued")
    return value


def redirect_uri_problem(uri: str) -> str | None:
    """Why a redirect URI may not be registered, or None if it may.

    Allowed: https; http on a loopback host (RFC 8252 7.3, OAuth 2.1 2.3.1); private-use
    schemes with a dot (RFC 8252 7.1). Never a fragment (RFC 6749 3.1.2).
    """
    parsed = urlparse(uri)
    if parsed.fragment or "#" in uri:
        return f"redirect URI {uri!r} has a fragment (RFC 6749 3.1.2)"
    scheme = parsed.scheme.lower()
    if scheme == "https":
        return None if parsed.netloc else f"redirect URI {uri!r} has no host"
    if scheme == "http":
        if (parsed.hostname or "") in LOOPBACK_HOSTS:
            return None
        return f"redirect URI {uri!r}: plain http is allowed only for loopback hosts (RFC 8252 8.3)"
    if "." in scheme:
        return None
    return (
        f"redirect URI {uri!r}: scheme {scheme!r} is not allowed "
        "(https, loopback http or a reverse-domain private scheme)"
    )


def resource_problem(resource: str) -> str | None:
    """RFC 8707 2: an absolute URI without a fragment."""
    parsed = urlparse(resource)
    if not parsed.scheme or not parsed.netloc:
        return "resource must be an absolute URI (RFC 8707 2)"
    if parsed.fragment or "#" in resource:
        return "resource must not contain a fragment (RFC 8707 2)"
    return None


class StoreProvider:
    """``OAuthAuthorizationServerProvider[StoredCode, StoredRefreshToken, StoredAccessToken]``.

    Public helpers beyond the SDK protocol (used by the app and by mutant wrappers):
    ``match_redirect_uri``, ``verify_client_secret``, ``approve``, ``deny``,
    ``create_code`` and ``issue_tokens``.
    """

    def __init__(self, backend: StorageBackend, config: ServerConfig) -> None:
        """Serve ``backend`` with the lifetimes and policies of ``config``."""
        self.backend = backend
        self.config = config

    # clients -----------------------------------------------------------------------------
    async def get_client(self, client_id: str) -> StoredClient | None:
        """The registered client, or None (also for ids the store would refuse)."""
        try:
            record = await self.backend.get_client(client_id)
        except InvalidArgument:
            return None
        if record is None:
            return None
        data = {
            k: v
            for k, v in dict(record.metadata).items()
            if k not in ("client_secret", "client_id") and not k.startswith("_")
        }
        return StoredClient.model_validate(
            {**data, "client_id": record.client_id, "has_secret": record.secret_hash is not None}
        )

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        """Store a client registered by the SDK's handler (RFC 7591), after our own checks.

        The SDK accepts any redirect URI and any grant or response type; we refuse unsafe
        redirect URIs and narrow the types to what we serve (RFC 7591 3.2.1 lets the
        server replace requested values; the response shows the replaced ones).
        """
        uris = [str(u) for u in client_info.redirect_uris or []]
        if not uris:
            raise RegistrationError("invalid_redirect_uri", "at least one redirect_uri is required")
        for uri in uris:
            problem = redirect_uri_problem(uri)
            if problem:
                raise RegistrationError("invalid_redirect_uri", problem)
        client_info.grant_types = [g for g in SUPPORTED_GRANTS if g in client_info.grant_types]
        client_info.response_types = ["code"]
        metadata = client_info.model_dump(mode="json", exclude_none=True, exclude={"client_secret"})
        try:
            await self.backend.create_client(
                client_info.client_id, metadata, secret=client_info.client_secret
            )
        except (Conflict, InvalidArgument) as exc:
            raise RegistrationError("invalid_client_metadata", str(exc)) from None

    async def verify_client_secret(self, client_id: str, secret: str) -> bool:
        """Constant-time check of a presented client secret against the stored hash."""
        try:
            return await self.backend.verify_client_secret(client_id, secret)
        except InvalidArgument:
            return False

    def match_redirect_uri(self, client: StoredClient, uri: str) -> str | None:
        """The registered URI ``uri`` is, by exact string comparison, or None.

        RFC 6749 3.1.2.3 / OAuth 2.1 / RFC 9700 2.1: exact matching; no prefixes, no
        added paths or query parameters. The one exception: a loopback IP URI matches
        with any port (RFC 8252 7.3, OAuth 2.1 4.1.1).
        """
        for registered in client.redirect_uris or []:
            if str(registered) == uri or loopback_match(uri, str(registered)):
                return uri
        return None

    def default_redirect_uri(self, client: StoredClient) -> str | None:
        """The redirect URI of a request that names none: the only registered one, else None.

        OAuth 2.1 4.1.1: ``redirect_uri`` is "REQUIRED if multiple redirect URIs are
        registered".
        """
        uris = client.redirect_uris or []
        return str(uris[0]) if len(uris) == 1 else None

    @staticmethod
    def verifier_problem(verifier: str | None) -> tuple[str, str] | None:
        """``(error, description)`` when a token request's code_verifier cannot be used.

        OAuth 2.1 4.1.3: present if and only if the code had a challenge (every code here
        has one); RFC 7636 4.1: 43 to 128 unreserved characters.
        """
        if not verifier:
            return ("invalid_grant", "code_verifier is missing: the authorization request "
                    "had a code_challenge (OAuth 2.1 4.1.3)")
        if not VERIFIER_SYNTAX.match(verifier):
            return ("invalid_request", "code_verifier must be 43 to 128 unreserved "
                    "characters (RFC 7636 4.1)")
        return None

    async def verify_registration_token(self, client_id: str, token: str) -> bool:
        """Whether ``token`` is the registration access token of ``client_id`` (RFC 7592)."""
        record = await self.backend.get_client(client_id)
        stored = record.metadata.get(RAT_KEY) if record is not None else None
        return isinstance(stored, str) and hmac.compare_digest(
            stored, hashlib.sha256(token.encode()).hexdigest()
        )

    async def delete_registration(self, client_id: str) -> bool:
        """Delete a client (RFC 7592 2.3); its id, secret and registration token die with it."""
        return await self.backend.delete_client(client_id)

    # authorization -----------------------------------------------------------------------
    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        """Auto consent: a code at once. Form consent: a pending request for /consent."""
        challenge = params.code_challenge
        if not (43 <= len(challenge) <= 128) or not all(
            c.isascii() and (c.isalnum() or c in "-._~") for c in challenge
        ):
            raise AuthorizeError("invalid_request", "code_challenge is not a valid S256 challenge")
        resource = params.resource or self.config.resource_url
        problem = resource_problem(resource)
        if problem:
            raise AuthorizeError("invalid_target", problem)
        request = {
            "client_id": client.client_id,
            "redirect_uri": str(params.redirect_uri),
            "explicit": params.redirect_uri_provided_explicitly,
            "scopes": list(
                params.scopes if params.scopes is not None else self._default_scopes(client)
            ),
            "code_challenge": challenge,
            "resource": resource,
            "state": params.state,
        }
        try:
            if self.config.consent == "form":
                request_id = _new_secret()
                await self.backend.put_state(
                    request_id, StateRecord(client_id=client.client_id, extra=request), PENDING_TTL
                )
                return (
                    f"{self.config.issuer_url}{CONSENT_PATH}?{urlencode({'request': request_id})}"
                )
            return await self.create_code(request)
        except StorageUnavailable as exc:
            found = OUTAGE.get()
            if found is None:
                raise
            found.append(exc)
            raise AuthorizeError("temporarily_unavailable", "the store is unavailable") from None

    def _default_scopes(self, client: OAuthClientInformationFull) -> list[str]:
        if client.scope:
            return client.scope.split()
        return list(self.config.scopes)

    async def create_code(self, request: dict[str, Any]) -> str:
        """Store a new code for an approved request; return the redirect with it."""
        code = _new_secret()
        await self.backend.put_code(
            code,
            CodeRecord(
                client_id=request["client_id"],
                subject=self.config.subject,
                grant_id=secrets.token_hex(16),
                redirect_uri=request["redirect_uri"],
                scopes=tuple(request["scopes"]),
                code_challenge=request["code_challenge"],
                code_challenge_method="S256",
                resource=request["resource"],
                redirect_uri_provided_explicitly=bool(request["explicit"]),
            ),
            self.config.code_ttl,
        )
        return construct_redirect_uri(
            request["redirect_uri"], code=code, state=request["state"], iss=self.config.issuer_url
        )

    async def _pending(self, request_id: str) -> dict[str, Any] | None:
        try:
            result = await self.backend.consume_state(request_id)
        except InvalidArgument:
            return None
        if result.status is not ConsumeStatus.CONSUMED or result.record is None:
            return None
        return dict(result.record.extra)

    async def approve(self, request_id: str) -> str | None:
        """Consent given: the redirect URL with a new code, or None if unknown/used/expired."""
        request = await self._pending(request_id)
        return None if request is None else await self.create_code(request)

    async def deny(self, request_id: str) -> str | None:
        """Consent refused: the redirect URL with ``access_denied`` (RFC 6749 4.1.2.1)."""
        request = await self._pending(request_id)
        if request is None:
            return None
        return construct_redirect_uri(
            request["redirect_uri"],
            error="access_denied",
            error_description="the resource owner denied the request",
            state=request["state"],
            iss=self.config.issuer_url,
        )

    # codes -----------------------------------------------------------------------------
    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> StoredCode | None:
        """A live code, consumed or not, so that a replay reaches the exchange."""
        try:
            record = await self.backend.get_code(authorization_code)
        except InvalidArgument:
            return None
        if record is None:
            return None
        return StoredCode(
            code=authorization_code,
            scopes=list(record.scopes),
            expires_at=record.expires_at,
            client_id=record.client_id,
            code_challenge=record.code_challenge,
            redirect_uri=AnyUrl(record.redirect_uri),
            redirect_uri_provided_explicitly=record.redirect_uri_provided_explicitly,
            resource=record.resource,
            subject=record.subject,
            grant_id=record.grant_id,
            consumed=record.consumed,
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: StoredCode
    ) -> OAuthToken:
        """Consume the code atomically; a replay revokes the grant."""
        result = await self.backend.consume_code(authorization_code.code)
        if result.status is ConsumeStatus.ALREADY_USED:
            if result.record is not None:
                await self.backend.revoke_grant(result.record.grant_id)
            raise TokenError(
                "invalid_grant", "authorization code was already used; its grant is revoked"
            )
        if result.status is not ConsumeStatus.CONSUMED or result.record is None:
            raise TokenError("invalid_grant", "authorization code is expired or unknown")
        record = result.record
        return await self.issue_tokens(
            client,
            grant_id=record.grant_id,
            subject=record.subject,
            scopes=list(record.scopes),
            resource=record.resource,
        )

    async def issue_tokens(
        self,
        client: OAuthClientInformationFull,
        *,
        grant_id: str,
        subject: str,
        scopes: list[str],
        resource: str | None,
        refresh_token: str | None = None,
    ) -> OAuthToken:
        """Store a new access token (and a new refresh token unless one is given)."""
        access = _new_secret()
        await self.backend.put_access_token(
            access,
            AccessTokenRecord(
                client_id=client.client_id,
                subject=subject,
                grant_id=grant_id,
                scopes=tuple(scopes),
                resource=resource,
            ),
            self.config.access_ttl,
        )
        if refresh_token is None and "refresh_token" in client.grant_types:
            refresh_token = _new_secret()
            await self.backend.put_refresh_token(
                refresh_token,
                RefreshTokenRecord(
                    client_id=client.client_id,
                    subject=subject,
                    grant_id=grant_id,
                    scopes=tuple(scopes),
                    resource=resource,
                ),
                self.config.refresh_ttl,
            )
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=int(self.config.access_ttl),
            scope=" ".join(scopes) or None,
            refresh_token=refresh_token,
        )

    # refresh tokens ----------------------------------------------------------------------
    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> StoredRefreshToken | None:
        """A live refresh token, rotated or revoked ones too (the exchange decides)."""
        try:
            record = await self.backend.get_refresh_token(refresh_token)
        except InvalidArgument:
            return None
        if record is None:
            return None
        return StoredRefreshToken(
            token=refresh_token,
            client_id=record.client_id,
            scopes=list(record.scopes),
            expires_at=_ceil(record.expires_at),
            resource=record.resource,
            subject=record.subject,
            grant_id=record.grant_id,
            rotated=record.rotated,
            revoked=record.revoked,
        )

    async def exchange_refresh_token(
        self,
        client: OAuthClientInformationFull,
        refresh_token: StoredRefreshToken,
        scopes: list[str],
    ) -> OAuthToken:
        """Rotate atomically; reuse of a rotated token revokes the family (the backend does)."""
        new = _new_secret()
        result = await self.backend.rotate_refresh_token(
            refresh_token.token, new, self.config.refresh_ttl
        )
        if result.status is RotateStatus.REUSED:
            raise TokenError(
                "invalid_grant",
                "refresh token was already used; every token of its grant is revoked",
            )
        if result.status is not RotateStatus.ROTATED or result.record is None:
            raise TokenError(
                "invalid_grant", f"refresh token is {result.status.value.replace('_', ' ')}"
            )
        record = result.record
        return await self.issue_tokens(
            client,
            grant_id=record.grant_id,
            subject=record.subject,
            scopes=scopes,
            resource=record.resource,
            refresh_token=new,
        )

    # access tokens -----------------------------------------------------------------------
    async def load_access_token(self, token: str) -> StoredAccessToken | None:
        """A live, unrevoked access token (one store read: the hot path)."""
        try:
            record = await self.backend.get_access_token(token)
        except InvalidArgument:
            return None
        if record is None:
            return None
        # model_construct: the record is ours and already valid; skip pydantic validation
        # on the hot path
        return StoredAccessToken.model_construct(
            token=token,
            client_id=record.client_id,
            scopes=list(record.scopes),
            expires_at=_ceil(record.expires_at),
            resource=record.resource,
            subject=record.subject,
            grant_id=record.grant_id,
        )

    async def revoke_token(self, token: StoredAccessToken | StoredRefreshToken) -> None:
        """RFC 7009: an access token alone; a refresh token with its whole grant.

        A rotated refresh token ends its grant too (RFC 7009 2.1 lets the revocation of
        a token revoke the underlying grant): whether a concurrent refresh rotated the
        token just before the revocation or just after, the family ends, so a revocation
        that answered 200 leaves no refresh token of the family usable.
        """
        if isinstance(token, StoredRefreshToken):
            if not token.revoked:
                await self.backend.revoke_grant(token.grant_id)
            return
        await self.backend.revoke_access_token(token.token)
