"""Self-test: every mutant server is caught by its named live checks; the reference passes."""

import pytest

from fixtures.live_harness import run_live, summary

MUTANTS = {
    "code_reusable": ["test_code_is_single_use"],
    "replay_not_revoked": ["test_replayed_code_revokes_issued_tokens"],
    "no_refresh_rotation": ["test_refresh_rotates_refresh_token"],
    "rotation_without_reuse_detection": ["test_reused_refresh_token_revokes_family"],
    "redirect_prefix_match": [
        "test_redirect_uri_with_extra_characters_is_refused",
        "test_redirect_uri_with_added_path_is_refused",
        "test_redirect_uri_with_added_query_is_refused",
    ],
    "pkce_plain_accepted": ["test_pkce_plain_is_refused"],
    "no_www_authenticate": [
        "test_invalid_token_is_refused_with_401",
        "test_unauthenticated_mcp_request_gets_401_with_resource_metadata",
    ],
}

FAST = ("--authconform-flows=3", "--authconform-strict")


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_mutant_server_fails_named_checks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str
) -> None:
    wrapper = f"--authconform-server-arg=--provider-wrapper=fixtures.mutants.servers:{mutant}"
    result, outcomes = run_live(pytester, monkeypatch, "--backend=memory", wrapper, *FAST)
    assert "INTERNALERROR" not in result.stdout.str()
    for check in MUTANTS[mutant]:
        got = outcomes.get(f"{check}[ref-memory]")
        assert got is not None, f"{check} did not run:\n{summary(outcomes)}"
        assert got.outcome == "failed", f"mutant {mutant}: {check} {got.outcome}\n{got.message}"
        assert "observed:" in got.message and "spec: " in got.message


def test_memory_with_two_processes_fails_shared_state_checks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, outcomes = run_live(pytester, monkeypatch, "--backend=memory",
                           "--authconform-instances=2", *FAST)
    for check in ("test_flow_hops_between_instances", "test_repeated_flows_all_succeed"):
        got = outcomes[f"{check}[ref-memory]"]
        assert got.outcome == "failed", got
        assert "state is not shared" in got.message


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis", "postgres"])
def test_reference_server_passes_every_live_check(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    result, outcomes = run_live(pytester, monkeypatch, f"--backend={backend}", *FAST)
    bad = {k: v for k, v in outcomes.items() if v.outcome not in ("passed", "skipped")}
    assert not bad, summary(bad)
    unavailable = [k for k, v in outcomes.items() if "unavailable:" in v.message]
    if unavailable:
        pytest.skip(f"unavailable: reference server over {backend} could not start")
    assert result.ret == 0
    if backend != "memory":  # two processes over one store
        assert outcomes[f"test_flow_hops_between_instances[ref-{backend}]"].outcome == "passed"
