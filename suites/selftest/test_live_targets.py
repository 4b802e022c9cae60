"""Self-test: the live suite against the deployments issue 3 names, besides the default.

- a ``module:callable`` authorization driver (``fixtures/drivers.py``) that submits the
  consent form of ``authconform serve --consent form``; an unimportable driver (or a
  client id without its redirect URI) is a usage error; a driver that raises fails the
  checks with its reason;
- a pre-registered client from options (public, and confidential with the secret in the
  environment): it is used for the flows, registration checks still run;
- an authorization server with no MCP endpoint (``serve --no-mcp``): the AS checks pass,
  the resource-server checks skip as ``not-advertised``;
- a split deployment (``serve --role as`` + ``serve --role rs --authorization-server``
  over one sqlite file or one redis namespace, two origins): discovery follows the
  protected-resource metadata to the other origin and everything passes; an origin nobody
  named is still refused;
- refresh reuse by client type: the ``rotation_without_reuse_detection`` mutant fails the
  public-client check (the confidential one reports the reuse refused, family kept); the
  ``confidential_reuse_grace`` variant passes and the confidential check reports the grace
  period;
- SHOULD severity keyed on the ``spec`` marker, for any test (not only live ones).

Every server is started on 127.0.0.1 with ``--port 0`` and stopped (SIGTERM, then
SIGKILL) when its test ends.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import authconform._session
from authconform.live import LiveFailure, Target, discover
from authconform.live._reference import ReferenceServer, start_reference
from fixtures.live_harness import ROOT, Outcome, run_live, summary

FAST = ("--authconform-flows=3", "--authconform-max-wait=5")
RS_CHECKS = (
    "test_bearer_token_runs_mcp_initialize_and_tool_call",
    "test_invalid_token_is_refused_with_401",
    "test_expired_token_is_refused_with_401",
    "test_wrong_audience_token_is_refused",
    "test_protected_resource_metadata_names_resource_and_servers",
    "test_unauthenticated_mcp_request_gets_401_with_resource_metadata",
)
SKIP_CATEGORIES = ("not-applicable", "unavailable", "disabled", "not-advertised")


# -- helpers ---------------------------------------------------------------------------
def _serve(workdir: Path, *args: str, backend: str = "memory",
           namespace: str = "authconform_selftest") -> ReferenceServer:
    """``authconform serve`` on 127.0.0.1:<free port> (stopped by the caller)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(start_reference(backend, namespace, workdir, extra=[
        "--access-ttl", "4", *args]))


@pytest.fixture
def servers() -> Iterator[list[ReferenceServer]]:
    """Servers a test starts; every one is stopped (SIGTERM, then SIGKILL) at the end."""
    started: list[ReferenceServer] = []
    try:
        yield started
    finally:
        for server in reversed(started):
            server.stop()


def _logs(*servers: ReferenceServer) -> list[str]:
    return [f"--authconform-server-log={log}" for s in servers for log in s.logs]


def _all_pass(outcomes: dict[str, Outcome]) -> None:
    assert outcomes, "no check ran"
    bad = {k: v for k, v in outcomes.items() if v.outcome not in ("passed", "skipped")}
    assert not bad, summary(bad)
    for name, got in outcomes.items():
        if got.outcome == "skipped":
            assert got.message.split(":", 1)[0].strip() in SKIP_CATEGORIES, (name, got.message)


def _outcome(outcomes: dict[str, Outcome], check: str) -> Outcome:
    found = [v for k, v in outcomes.items() if k.split("[", 1)[0] == check]
    assert len(found) == 1, f"{check} ran {len(found)} times:\n{summary(outcomes)}"
    return found[0]


def _property(pytester: pytest.Pytester, check: str, name: str) -> str | None:
    """A user property of ``check`` from the JUnit file of the last ``run_live``."""
    for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase"):
        if case.get("name", "").split("[", 1)[0] == check:
            for prop in case.iter("property"):
                if prop.get("name") == name:
                    return prop.get("value")
    return None


def _register(issuer: str, *, confidential: bool, redirect_uri: str) -> dict[str, str]:
    """Register a client at the reference server's /register (as an operator would)."""
    meta = {
        "redirect_uris": [redirect_uri],
        "token_endpoint_auth_method": "client_secret_post" if confidential else "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "pre-registered by the self-test",
    }
    response = httpx.post(issuer + "/register", json=meta, timeout=10)
    assert response.status_code == 201, response.text[:300]
    body: dict[str, str] = response.json()
    return body


# -- 1. the module:callable driver -------------------------------------------------------
@pytest.mark.parametrize("driver", ["submit_consent", "submit_consent_blocking"])
def test_callable_driver_passes_every_check_with_a_consent_form(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    result, outcomes = run_live(
        pytester, monkeypatch, "--backend=memory", "--authconform-server-arg=--consent=form",
        f"--authconform-driver=fixtures.drivers:{driver}", "--authconform-strict", *FAST,
    )
    _all_pass(outcomes)
    assert result.ret == 0
    # the consent pages were fetched through the driver and checked for framing headers
    assert _outcome(outcomes, "test_rendered_pages_forbid_framing").outcome == "passed"
    assert _outcome(outcomes, "test_code_is_single_use").outcome == "passed"


def test_redirect_driver_gets_no_code_from_a_consent_form(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: in form mode the driver's work is needed (``redirect`` does not submit)."""
    _, outcomes = run_live(
        pytester, monkeypatch, "--backend=memory", "--authconform-server-arg=--consent=form",
        "--authconform-driver=redirect", "-k", "test_state_is_returned_unchanged", *FAST,
    )
    got = _outcome(outcomes, "test_state_is_returned_unchanged")
    assert got.outcome == "failed" and "observed:" in got.message, got


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--authconform-driver=fixtures.no_such_module:drive"], "cannot import"),
        (["--authconform-driver=fixtures.drivers:no_such_driver"], "has no attribute"),
        (["--authconform-driver=fixtures.drivers"], "package.module:callable"),
        (["--authconform-client-id=abc"], "--authconform-redirect-uri"),
        (["--authconform-client-id=abc", "--authconform-redirect-uri=http://127.0.0.1:9/cb",
          "--authconform-client-auth=private_key_jwt"], "client_secret_basic"),
    ],
    ids=["no-module", "no-attribute", "no-colon", "client-without-redirect", "bad-auth"],
)
def test_bad_driver_or_client_options_are_usage_errors(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], says: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess(
        str(ROOT / "authconform/suites/live"), "-c", str(ROOT / "pyproject.toml"),
        "--rootdir", str(ROOT),
        "-p", "no:cacheprovider", *args, timeout=120,
    )
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-1500:] + err
    assert says in err and "Traceback" not in err, err


def test_raising_driver_fails_checks_with_its_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, outcomes = run_live(
        pytester, monkeypatch, "--backend=memory", "--authconform-driver=fixtures.drivers:broken",
        "-k", "test_state_is_returned_unchanged or test_code_is_single_use", *FAST,
    )
    assert "INTERNALERROR" not in result.stdout.str()
    for check in ("test_state_is_returned_unchanged", "test_code_is_single_use"):
        got = _outcome(outcomes, check)
        assert got.outcome == "failed", got
        assert "authorization driver fixtures.drivers:broken raised" in got.message, got.message


# -- 2. a pre-registered client ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["public", "confidential"])
def test_preregistered_client_is_used_for_the_flows(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    servers: list[ReferenceServer], kind: str,
) -> None:
    server = _serve(tmp_path / "server")
    servers.append(server)
    issuer = server.urls[0]
    redirect = f"http://127.0.0.1:{40000 + secrets.randbelow(20000)}/preregistered"
    client = _register(issuer, confidential=kind == "confidential", redirect_uri=redirect)
    args = [f"--server-url={issuer}/mcp", f"--authconform-client-id={client['client_id']}",
            f"--authconform-redirect-uri={redirect}", *_logs(server), *FAST]
    if kind == "confidential":  # the secret travels in the environment, not argv
        monkeypatch.setenv("AUTHCONFORM_CLIENT_SECRET", client["client_secret"])
    result, outcomes = run_live(pytester, monkeypatch, *args)
    _all_pass(outcomes)
    assert result.ret == 0
    out = result.stdout.str()
    # the flows ran with the pre-registered client ...
    note = next((line for line in out.splitlines()
                 if f"pre-registered client {client['client_id']}:" in line), "")
    used = int(note.split(f"{client['client_id']}:", 1)[1].split()[0]) if note else 0
    assert used >= 10, f"pre-registered client barely used:\n{out[-2500:]}"
    # ... and the checks of dynamic registration still ran (the server advertises it)
    for check in ("test_registration_is_accepted",
                  "test_registration_rejects_plain_http_redirect_uri",
                  "test_refresh_token_is_bound_to_its_client", "test_code_is_bound_to_its_client"):
        assert _outcome(outcomes, check).outcome == "passed", check
    # public-client reuse detection needs a public client: registered when pre-registered
    # is confidential; the confidential check uses the pre-registered one if it is one
    assert _outcome(outcomes, "test_reused_refresh_token_revokes_family").outcome == "passed"
    reuse = _property(pytester, "test_confidential_client_refresh_reuse_is_reported",
                      "authconform_refresh_reuse")
    assert reuse == "refused", reuse
    assert _outcome(outcomes, "test_server_log_contains_no_issued_secret").outcome == "passed"
    if kind == "confidential":
        assert client["client_secret"] not in out + result.stderr.str()


# -- 3. an authorization server without an MCP endpoint ------------------------------------
def test_authorization_server_alone_passes_and_skips_resource_checks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    servers: list[ReferenceServer],
) -> None:
    server = _serve(tmp_path / "as", "--no-mcp")
    servers.append(server)
    issuer = server.urls[0]
    assert httpx.post(issuer + "/mcp", json={}, timeout=10).status_code == 404
    prm = httpx.get(issuer + "/.well-known/oauth-protected-resource", timeout=10)
    assert prm.status_code == 404
    result, outcomes = run_live(pytester, monkeypatch, f"--server-url={issuer}",
                                *_logs(server), "--authconform-strict", *FAST)
    _all_pass(outcomes)
    assert result.ret == 0
    for check in RS_CHECKS:
        got = _outcome(outcomes, check)
        assert got.outcome == "skipped", (check, got)
        assert got.message.startswith("not-advertised:"), (check, got.message)
    for check in ("test_metadata_has_required_fields", "test_metadata_advertises_pkce_s256",
                  "test_registration_is_accepted", "test_code_is_single_use",
                  "test_replayed_code_revokes_issued_tokens", "test_pkce_plain_is_refused",
                  "test_redirect_uri_with_added_path_is_refused",
                  "test_reused_refresh_token_revokes_family",
                  "test_revoked_refresh_token_is_refused", "test_unknown_client_gets_error_page",
                  "test_token_errors_are_json_with_registered_codes",
                  "test_server_log_contains_no_issued_secret"):
        assert _outcome(outcomes, check).outcome == "passed", check


# -- 4. an MCP server whose authorization server is on another origin ----------------------
def _split_backend(kind: str, tmp_path: Path) -> tuple[str, str]:
    namespace = "acselftest_" + secrets.token_hex(4)
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.sqlite3'}", namespace
    url = os.environ.get("AUTHCONFORM_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no redis here
        pytest.skip(f"unavailable: redis at {url} ({type(exc).__name__}); set "
                    "AUTHCONFORM_REDIS_URL")
    return url, namespace


def _drop(backend: str, namespace: str) -> None:
    from authconform.server.cli import backend_from_spec

    async def drop() -> None:
        store = backend_from_spec(backend, namespace)
        try:
            await store.drop_namespace()
        finally:
            await store.close()

    asyncio.run(drop())


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_split_deployment_is_followed_to_the_authorization_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    servers: list[ReferenceServer], kind: str,
) -> None:
    backend, namespace = _split_backend(kind, tmp_path)
    try:
        auth_server = _serve(tmp_path / "as", "--role", "as", backend=backend,
                             namespace=namespace)
        servers.append(auth_server)
        resource_server = _serve(tmp_path / "rs", "--role", "rs", "--authorization-server",
                                 auth_server.urls[0], backend=backend, namespace=namespace)
        servers.append(resource_server)
        as_url, rs_url = auth_server.urls[0], resource_server.urls[0]
        assert as_url != rs_url  # same host, different ports: different origins
        result, outcomes = run_live(
            pytester, monkeypatch, f"--server-url={rs_url}/mcp",
            *_logs(auth_server, resource_server), "--authconform-strict", *FAST,
        )
        _all_pass(outcomes)
        assert result.ret == 0
        for check in (*RS_CHECKS, "test_metadata_issuer_matches_discovery_url",
                      "test_code_is_single_use", "test_reused_refresh_token_revokes_family",
                      "test_server_log_contains_no_issued_secret"):
            assert _outcome(outcomes, check).outcome == "passed", check
    finally:
        for server in servers:
            server.stop()
        _drop(backend, namespace)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role", "rs"], "--role rs needs --authorization-server"),
        (["--no-mcp", "--role", "rs"], "--no-mcp contradicts --role rs"),
        (["--authorization-server", "http://127.0.0.1:9"], "only for --role rs"),
        (["--role", "rs", "--authorization-server", "http://127.0.0.1:9",
          "--issuer", "http://127.0.0.1:9"], "--role rs serves no issuer"),
    ],
    ids=["rs-without-as", "no-mcp-and-rs", "as-url-without-rs", "rs-with-issuer"],
)
def test_serve_role_options_are_checked(args: list[str], says: str) -> None:
    """Contradicting role options are usage errors (exit 2) before anything is bound."""
    done = subprocess.run(
        [sys.executable, "-m", "authconform.cli", "serve", "--port", "0", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and "listening" not in done.stdout, done.stderr


class _Sentinel(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_split_deployment_opens_only_the_named_origins(
    tmp_path: Path, servers: list[ReferenceServer]
) -> None:
    """The AS origin is allowed only once the target's PRM names it; a third never is."""
    backend = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    auth_server = _serve(tmp_path / "as", "--role", "as", backend=backend)
    servers.append(auth_server)
    resource_server = _serve(tmp_path / "rs", "--role", "rs", "--authorization-server",
                             auth_server.urls[0], backend=backend)
    servers.append(resource_server)
    sentinel = ThreadingHTTPServer(("127.0.0.2", 0), _Sentinel)
    threading.Thread(target=sentinel.serve_forever, daemon=True).start()
    third = f"http://127.0.0.2:{sentinel.server_address[1]}/"
    as_meta = auth_server.urls[0] + "/.well-known/oauth-authorization-server"

    async def scenario() -> None:
        target = Target("split", [resource_server.urls[0] + "/mcp"], timeout=5)
        try:
            with pytest.raises(LiveFailure, match="not a named host"):
                await target.request("GET", as_meta, purpose="metadata")
            disc = await discover(target)
            assert disc.issuer == auth_server.urls[0]
            assert disc.mcp_url == resource_server.urls[0] + "/mcp"
            assert (await target.request("GET", as_meta, purpose="metadata")).status == 200
            with pytest.raises(LiveFailure, match="not a named host"):
                await target.request("GET", third, purpose="metadata")
        finally:
            await target.aclose()

    try:
        asyncio.run(scenario())
    finally:
        sentinel.shutdown()
        sentinel.server_close()
    assert _Sentinel.hits == []


# -- 5. refresh reuse by client type -------------------------------------------------------
_REUSE = "test_reused_refresh_token_revokes_family"
_CONFIDENTIAL = "test_confidential_client_refresh_reuse_is_reported"


@pytest.mark.parametrize(
    ("wrapper", "public", "reported", "says"),
    [
        ("rotation_without_reuse_detection", "failed", "refused-family-kept",
         "reuse of a rotated refresh token refused"),
        ("confidential_reuse_grace", "passed", "grace-period",
         "a rotated refresh token was accepted again"),
    ],
)
def test_refresh_reuse_strictness_depends_on_client_type(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
    wrapper: str, public: str, reported: str, says: str,
) -> None:
    """Public clients MUST get reuse detection; for confidential ones it is reported."""
    arg = f"--authconform-server-arg=--provider-wrapper=fixtures.mutants.servers:{wrapper}"
    result, outcomes = run_live(pytester, monkeypatch, "--backend=memory", arg,
                                "-k", "refresh", "--authconform-strict", *FAST)
    got = _outcome(outcomes, _REUSE)
    assert got.outcome == public, got
    if public == "failed":
        assert "observed:" in got.message and "spec: RFC9700-4.14.2" in got.message
    confidential = _outcome(outcomes, _CONFIDENTIAL)
    assert confidential.outcome == "passed", confidential  # reported, never failed
    assert _property(pytester, _CONFIDENTIAL, "authconform_refresh_reuse") == reported
    out = result.stdout.str()
    assert f"confidential client (client_secret_post): {says}" in out, out[-2000:]


# -- 6. SHOULD severity from the spec marker, for any check of ours ------------------------
SEVERITY_TESTS = """
import pytest

spec = pytest.mark.authconform_spec


@spec("RFC6749-10.13", level="SHOULD")
def test_should_level_breach():
    assert "framing allowed" == "framing denied"


@spec("RFC6749-10.13")
def test_must_level_breach():
    assert 1 == 2


@spec("RFC6749-10.13", level="SHOULD")
def test_should_level_pass():
    pass
"""


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_should_marker_downgrades_a_failing_check_of_ours_to_warned(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, strict: bool
) -> None:
    ours = pytester.mkdir("oursuites")
    monkeypatch.setattr(authconform._session, "SUITES_DIR", ours.resolve())
    (ours / "test_severity.py").write_text(SEVERITY_TESTS)
    args = ["--authconform-strict"] if strict else []
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", str(ours), *args)
    out = result.stdout.str()
    if strict:
        result.assert_outcomes(failed=2, passed=1)
        assert "SHOULD-level warnings" not in out
    else:
        counts = result.parseoutcomes()
        assert (counts.get("failed"), counts.get("passed"), counts.get("warned")) == (1, 1, 1)
        assert "::test_should_level_breach: AssertionError: assert 'framing allowed'" in out, out
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_should_marker_changes_nothing_in_a_users_own_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authconform._session, "SUITES_DIR", (pytester.path / "none").resolve())
    pytester.makepyfile(test_severity=SEVERITY_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2, passed=1)
    assert "WARNED" not in result.stdout.str()


# -- the MCP endpoint implementations -----------------------------------------------------
def test_sdk_mcp_endpoint_passes_every_check_too(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference server's default MCP endpoint is our lean one; the SDK's must pass too."""
    result, outcomes = run_live(
        pytester, monkeypatch, "--backend=memory", "--authconform-server-arg=--mcp-impl=sdk",
        "--authconform-strict", *FAST,
    )
    _all_pass(outcomes)
    assert result.ret == 0
    for check in RS_CHECKS:
        assert _outcome(outcomes, check).outcome == "passed", check
