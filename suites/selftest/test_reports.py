"""Reports: results.json, summary.html and junit.xml from one result stream.

A small suite (passing, failing with a live-style failure text, SHOULD-warned, skipped
with categories, xfail, a Hypothesis failure, a state machine) runs in a pytest subprocess
inside a temp project whose ``conftest.py`` points ``authconform._session.SUITES_DIR`` at
its ``ours/`` folder, so that its files are ours as ``authconform/suites`` is. The files
it writes are checked as data, against the JSON Schema, and in headless Chromium.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from authconform.report import (
    Report,
    Requirement,
    Result,
    Run,
    SpecRef,
    check_id,
    load,
    redact,
    render_html,
    schema_path,
)
from authconform.report._requirements import load_requirements
from authconform.report.cli import main as report_main

#: Planted secrets: none may reach a report file or the rendered page.
SECRETS = {
    "bearer": "tok3n-BEARER-a1b2c3d4e5",
    "access": "tok3n-ACCESS-f6g7h8i9j0",
    "code": "c0de-SECRET-k1l2m3n4o5",
    "verifier": "ver1fier-SECRET-p6q7r8s9",
}

CONFTEST = """
from pathlib import Path

import authconform._session

# this project's ours/ stands in for authconform/suites (as the plugin's self-tests do)
authconform._session.SUITES_DIR = (Path(__file__).parent / "ours").resolve()
"""

CHECKS = """
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from authconform.live._record import Exchange, LiveFailure
from authconform.markers import spec


@spec("RFC6749-4.1.2", level="MUST")
def test_code_is_single_use(backend_spec):
    \"\"\"A code is redeemed once.\"\"\"


@spec("RFC6749-5.1", level="MUST")
def test_token_response_is_uncacheable(backend_spec):
    \"\"\"Token responses carry Cache-Control: no-store.\"\"\"
    if backend_spec.name == "memory":
        return
    exchange = Exchange(
        "POST", "https://as.example/token", "token request",
        request_headers={{"Authorization": "Bearer {bearer}"}},
        request_body="grant_type=authorization_code&code={code}&code_verifier={verifier}",
        status=200, headers={{"content-type": "application/json"}},
        text='{{"access_token": "{access}", "token_type": "Bearer", '
             '"note": "<script>alert(1)</script><img src=x onerror=alert(2)>"}}',
    )
    raise LiveFailure(
        "token response without Cache-Control <b>no-store</b>",
        "Cache-Control: no-store",
        [exchange],
        spec="RFC6749-5.1",
    )


@spec("RFC9700-2.1", level="SHOULD")
def test_refresh_tokens_are_sender_constrained(backend_spec):
    \"\"\"Refresh tokens for public clients are rotated or sender-constrained.\"\"\"
    assert False, "observed: refresh token reusable; expected: rotation"


@spec("RFC7009-2.1")
def test_revocation_of_unknown_token(backend_spec):
    pytest.skip("not-applicable: backend {{}} has no revocation".format(backend_spec.name))


@spec("RFC7009-2.2")
def test_revocation_endpoint_advertised(backend_spec):
    pytest.skip("not-advertised: no revocation_endpoint in the metadata")


@spec("RFC8414-3.3")
@pytest.mark.xfail(reason="known: issuer has a trailing slash", strict=True)
def test_issuer_is_identical(backend_spec):
    assert "https://as.example/" == "https://as.example"


@spec("CONTRACT-codes")
@settings(max_examples=200, database=None, deadline=None)
@given(n=st.integers(min_value=0, max_value=50))
def test_code_ttl_is_honoured(backend_spec, n):
    \"\"\"Expiry follows the TTL.\"\"\"
    assert n < 5


class CounterMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.n = 0

    @rule()
    def inc(self):
        self.n += 1

    @invariant()
    def stays_small(self):
        assert self.n < 3, "observed: counter at {{}}; expected: below 3".format(self.n)


CounterMachine.TestCase.settings = settings(max_examples=50, database=None, deadline=None)
TestCounterNeverReachesThree = spec("CONTRACT-codes")(CounterMachine.TestCase)
""".format(**SECRETS)

USER_TESTS = """
import pytest

#: one xdist worker runs this module: its module fixture (a whole run) is built once
pytestmark = pytest.mark.xdist_group("test_reports")


def test_user_passes():
    pass


@pytest.mark.skip(reason="flaky")
def test_user_skip():
    pass


def test_user_fails():
    assert 1 == 2
"""

INI = """
[pytest]
filterwarnings = error
"""

#: Outcomes the small suite must produce, per (check id, backend).
EXPECTED = {
    ("code-is-single-use", "memory"): "passed",
    ("code-is-single-use", "sqlite"): "passed",
    ("token-response-is-uncacheable", "memory"): "passed",
    ("token-response-is-uncacheable", "sqlite"): "failed",
    ("refresh-tokens-are-sender-constrained", "memory"): "warned",
    ("refresh-tokens-are-sender-constrained", "sqlite"): "warned",
    ("revocation-of-unknown-token", "memory"): "skipped",
    ("revocation-of-unknown-token", "sqlite"): "skipped",
    ("revocation-endpoint-advertised", "memory"): "skipped",
    ("revocation-endpoint-advertised", "sqlite"): "skipped",
    ("issuer-is-identical", "memory"): "xfailed",
    ("issuer-is-identical", "sqlite"): "xfailed",
    ("code-ttl-is-honoured", "memory"): "failed",
    ("code-ttl-is-honoured", "sqlite"): "failed",
    ("counter-never-reaches-three", None): "failed",
}


def _project(root: Path) -> Path:
    (root / "ours").mkdir(parents=True)
    (root / "user").mkdir()
    (root / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (root / "pytest.ini").write_text(INI)
    (root / "ours" / "test_checks.py").write_text(CHECKS)
    (root / "user" / "test_mine.py").write_text(USER_TESTS)
    return root


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHCONFORM_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The small suite and one user test file, over memory and sqlite: the reports dir."""
    project = _project(tmp_path_factory.mktemp("reports-project"))
    proc = _pytest(project, "--backend=memory,sqlite", "ours", "user")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    return project / "reports", out


def _results(reports: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((reports / "results.json").read_text())
    return data


def _by_key(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["check"], r["column"]): r for r in data["results"]}


def test_a_run_writes_the_three_reports_and_names_them(suite_run: tuple[Path, str]) -> None:
    reports, out = suite_run
    for name in ("junit.xml", "results.json", "summary.html"):
        assert (reports / name).is_file(), name
    line = next(ln for ln in out.splitlines() if ln.startswith("authconform reports:"))
    assert line.split()[2:] == [
        "reports/junit.xml", "reports/results.json", "reports/summary.html"
    ], line


def test_results_json_validates_against_its_schema(suite_run: tuple[Path, str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(Path(schema_path()).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(_results(suite_run[0]))


def test_results_hold_every_outcome_and_only_our_checks(suite_run: tuple[Path, str]) -> None:
    data = _results(suite_run[0])
    assert data["schema_version"] == 1
    got = {key: r["outcome"] for key, r in _by_key(data).items()}
    assert got == EXPECTED
    assert not [r for r in data["results"] if "user" in r["nodeid"]]


def test_results_carry_spec_refs_messages_categories_and_hypothesis(
    suite_run: tuple[Path, str],
) -> None:
    results = _by_key(_results(suite_run[0]))
    failed = results[("token-response-is-uncacheable", "sqlite")]
    assert failed["spec"] == [{
        "id": "RFC6749-5.1", "doc": "RFC6749", "doc_title": "OAuth 2.0", "section": "5.1",
        "level": "MUST", "url": "https://www.rfc-editor.org/rfc/rfc6749#section-5.1",
    }]
    assert failed["level"] == "MUST" and failed["column_kind"] == "backend"
    assert failed["module"].endswith("test_checks"), failed["module"]
    assert failed["title"] == "Token responses carry Cache-Control: no-store."
    assert failed["message"].startswith("observed: token response without Cache-Control")
    assert "spec: RFC6749-5.1 (MUST)" in failed["evidence"]
    assert "> POST https://as.example/token" in failed["evidence"]
    assert failed["duration"] >= 0
    warned = results[("refresh-tokens-are-sender-constrained", "memory")]
    assert warned["level"] == "SHOULD"
    assert "observed: refresh token reusable" in warned["message"]
    skipped = results[("revocation-of-unknown-token", "sqlite")]
    assert skipped["category"] == "not-applicable"
    assert skipped["message"] == "not-applicable: backend sqlite has no revocation"
    assert results[("revocation-endpoint-advertised", "sqlite")]["category"] == "not-advertised"
    assert results[("issuer-is-identical", "memory")]["message"] == (
        "known: issuer has a trailing slash"
    )
    hypo = results[("code-ttl-is-honoured", "memory")]
    # a digit seed, or "derandomize" where Hypothesis runs derandomized (its CI default)
    assert hypo["seed"] and (hypo["seed"].isdigit() or hypo["seed"] == "derandomize"), hypo
    assert re.search(r"n=5\b", hypo["falsifying_example"] or ""), hypo
    machine = results[("counter-never-reaches-three", None)]
    assert machine["column"] is None and machine["column_kind"] is None
    assert machine["message"] == "AssertionError: observed: counter at 3; expected: below 3"
    steps = (machine["falsifying_example"] or "").splitlines()
    assert steps[0] == "state = CounterMachine()" and steps.count("state.inc()") == 3, steps
    run = _results(suite_run[0])["runs"][0]
    assert run["exit_status"] == 1
    assert [b["name"] for b in run["selection"]["backends"]] == ["memory", "sqlite"]
    assert run["selection"]["namespace"]
    assert {"authconform", "pytest", "hypothesis"} <= set(run["packages"])
    assert run["python"] and run["host"] and run["started"] <= run["finished"]


def test_junit_is_xunit1_with_per_test_properties(suite_run: tuple[Path, str]) -> None:
    root = ET.parse(suite_run[0] / "junit.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert len(cases) == len(EXPECTED)
    case = cases["test_token_response_is_uncacheable[sqlite]"]
    props = [(p.get("name"), p.get("value")) for p in case.iter("property")]
    assert ("authconform_check", "token-response-is-uncacheable") in props
    assert ("authconform_spec", "RFC6749-5.1 (MUST)") in props
    assert ("authconform_level", "MUST") in props
    assert ("authconform_backend", "sqlite") in props
    assert ("authconform_outcome", "failed") in props
    assert case.find("failure") is not None
    warned = cases["test_refresh_tokens_are_sender_constrained[memory]"]
    assert ("authconform_outcome", "warned") in [
        (p.get("name"), p.get("value")) for p in warned.iter("property")
    ]
    assert warned.find("failure") is None
    hypo = [(p.get("name"), p.get("value")) for p in
            cases["test_code_ttl_is_honoured[memory]"].iter("property")]
    assert any(k == "authconform_seed" and v for k, v in hypo), hypo
    assert cases["test_issuer_is_identical[memory]"].find("skipped") is not None


def test_no_planted_secret_reaches_any_report(suite_run: tuple[Path, str]) -> None:
    reports = suite_run[0]
    for name in ("junit.xml", "results.json", "summary.html"):
        text = (reports / name).read_text()
        leaked = [k for k, v in SECRETS.items() if v in text]
        assert not leaked, f"{name} holds the planted {leaked}"
    evidence = _by_key(_results(reports))[("token-response-is-uncacheable", "sqlite")]["evidence"]
    for marker in ("[redacted:credentials]", "[redacted:access_token]", "[redacted:code]",
                   "[redacted:code_verifier]"):
        assert marker in evidence, evidence


def test_summary_html_is_self_contained_and_escaped(suite_run: tuple[Path, str]) -> None:
    page = (suite_run[0] / "summary.html").read_text()
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//(?!www\.rfc-editor|datatracker)""",
                         page)
    assert "default-src 'none'" in page
    for outcome in ("passed", "failed", "warned", "xfailed"):
        assert f'class="cell o-{outcome}' in page, outcome
    assert 'class="cell o-skipped c-not-applicable"' in page
    assert 'class="cell o-skipped c-not-advertised"' in page


def test_a_run_of_only_the_users_tests_writes_nothing(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    proc = _pytest(project, "user", "--junitxml=theirs.xml")
    assert "1 failed, 1 passed, 1 skipped in" in proc.stdout, proc.stdout[-2000:]
    assert not list(ET.parse(project / "theirs.xml").getroot().iter("property"))
    assert not (project / "reports").exists()
    assert "authconform reports" not in proc.stdout


def test_a_collection_error_in_our_suite_is_reported(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    (project / "ours" / "test_checks.py").write_text("import no_such_module_anywhere\n")
    proc = _pytest(project, "ours")
    assert proc.returncode == 2, proc.stdout[-2000:]
    (result,) = _results(project / "reports")["results"]
    assert result["outcome"] == "error" and result["check"] == "checks"
    assert "no_such_module_anywhere" in result["message"] + result["evidence"]


def test_with_junitxml_pytest_writes_it_and_xdist_results_match(
    suite_run: tuple[Path, str], tmp_path: Path
) -> None:
    """``--junitxml`` leaves JUnit to pytest (our properties in it); xdist changes nothing."""
    xdist = importlib.util.find_spec("xdist") is not None
    project = _project(tmp_path / "p")
    args = ["--backend=memory,sqlite", "ours", "user", "--junitxml=mine.xml"]
    proc = _pytest(project, *args, *(["-n", "2"] if xdist else []))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert not (project / "reports" / "junit.xml").exists()
    assert (project / "reports" / "results.json").is_file()
    cases = {c.get("name"): c for c in ET.parse(project / "mine.xml").getroot().iter("testcase")}
    ours = [(p.get("name"), p.get("value"))
            for p in cases["test_token_response_is_uncacheable[sqlite]"].iter("property")]
    assert ("authconform_check", "token-response-is-uncacheable") in ours
    assert ("authconform_backend", "sqlite") in ours
    assert not list(cases["test_user_fails"].iter("property"))
    got = {key: r["outcome"] for key, r in _by_key(_results(project / "reports")).items()}
    assert got == EXPECTED
    if not xdist:
        pytest.skip("unavailable: pytest-xdist is not installed (pip install pytest-xdist)")


def test_report_command_merges_runs(suite_run: tuple[Path, str], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    first = suite_run[0] / "results.json"
    data = _results(suite_run[0])
    renamed = {"memory": "redis", "sqlite": "postgres"}
    for r in data["results"]:
        r["column"] = renamed.get(r["column"], r["column"])
    data["runs"][0]["label"] = "ci job 2"
    second = tmp_path / "second.json"
    second.write_text(json.dumps(data))
    third = tmp_path / "third.json"
    third.write_text(first.read_text())
    assert report_main([str(first), str(second), str(third), "-o", str(tmp_path / "out")]) == 0
    assert "3 run(s)" in capsys.readouterr().out
    merged = load(tmp_path / "out" / "results.json")
    assert len(merged.runs) == 3
    assert {(r.run, r.column) for r in merged.results} == {
        (n, column) for n, columns in enumerate([("memory", "sqlite"), ("redis", "postgres"),
                                                 ("memory", "sqlite")])
        for column in (*columns, None)
    }
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads((tmp_path / "out" / "results.json").read_text()),
                        json.loads(Path(schema_path()).read_text()))
    page = (tmp_path / "out" / "summary.html").read_text()
    headers = re.findall(r"<th title=[^>]*>([^<]*)<br><span class=\"muted\">backend", page)
    assert headers == [  # the same backend in two runs: two columns, named by run
        "memory · run 1", "sqlite · run 1", "redis", "postgres", "memory · run 3", "sqlite · run 3"
    ], headers


def test_report_command_rejects_a_file_it_cannot_read(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 99, "runs": [], "results": []}')
    assert report_main([str(bad)]) == 2
    assert "schema_version 99" in capsys.readouterr().err


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.hrefs += [v or "" for k, v in attrs if k in ("href", "src")]
        assert not [k for k, _ in attrs if k.startswith("on")], (tag, attrs)


def test_hostile_text_in_results_is_escaped_not_injected() -> None:
    evil = '"><script>alert(1)</script><img src=x onerror=alert(2)><a href="javascript:x">'
    result = Result(
        check=evil, nodeid=evil, outcome="failed", title=evil, column=evil,
        column_kind="backend", message=evil, evidence=evil + "\n</pre>" + evil,
        spec=(SpecRef(evil, evil, evil, "MUST", "javascript:alert(3)", evil),),
        seed=evil, falsifying_example=evil, transcript=evil,
    )
    run = Run(label=evil, started=evil, finished=evil, python=evil, platform=evil, host=evil,
              packages={evil: evil}, selection={"namespace": evil, "backends": [{"name": evil}],
                                                evil: [evil]})
    page = render_html(Report((run,), (result,), (Requirement(evil, evil, None, (evil,)),)))
    parser = _Tags()
    parser.feed(page)
    assert not parser.tags & {"script", "img", "iframe", "object", "embed", "form", "link"}
    assert not [h for h in parser.hrefs if not h.startswith(("#", "https://"))], parser.hrefs
    assert "&lt;script&gt;" in page


def test_redaction_by_shape() -> None:
    text = (
        "> Authorization: Bearer abcdef123456\n"
        "> grant_type=authorization_code&code=XYZ123abc&code_verifier=v3r1f13r&"
        "code_challenge=keep-me\n"
        '< {"access_token": "at-123456", "refresh_token": "rt-654321", "token_type": "Bearer"}\n'
        "{'client_secret': 's3cr3t-v4lue'}\n"
        "already [redacted:access_token] stays\n"
    )
    out = redact(text)
    for secret in ("abcdef123456", "XYZ123abc", "v3r1f13r", "at-123456", "rt-654321",
                   "s3cr3t-v4lue"):
        assert secret not in out, out
    assert "code_challenge=keep-me" in out and '"token_type": "Bearer"' in out
    assert "already [redacted:access_token] stays" in out


def test_check_ids_are_derived_from_names() -> None:
    assert check_id("test_authorization_code_is_single_use") == "authorization-code-is-single-use"
    assert check_id("test_x[memory]") == "x"
    assert check_id("TestCodeRedemptionMachine") == "code-redemption-machine"


def test_coverage_column_appears_only_with_requirement_files(
    suite_run: tuple[Path, str], tmp_path: Path
) -> None:
    report = load(suite_run[0] / "results.json")
    assert report.requirements is None and "Requirement coverage" not in render_html(report)
    assert load_requirements(tmp_path / "none") is None
    (tmp_path / "rfc6749.json").write_text(json.dumps({"requirements": [
        {"id": "RFC6749-4.1.2-3", "text": "a code MUST be used once",
         "checks": ["code-is-single-use"]},
        {"id": "RFC6749-5.1-1", "checks": []},
        {"id": "RFC6749-10.6", "excluded": "client-side rule", "checks": []},
    ]}))
    reqs = load_requirements(tmp_path)
    assert reqs is not None and len(reqs) == 3
    page = render_html(Report(report.runs, report.results, reqs))
    assert "<th>Covers</th>" in page and "Requirement coverage" in page
    assert "covered (passed)" in page and "not covered" in page and "excluded: client-side" in page
    assert "requirements: 1/1 covered" in page


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("unavailable: selenium is not installed (pip install 'authconform[dev]')")
    if not chromium or not driver:
        pytest.skip(
            "unavailable: no chromium/chromedriver on PATH "
            "(apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    return chromium, driver


def test_summary_in_headless_chromium(suite_run: tuple[Path, str]) -> None:
    """The matrix renders, a failing cell opens its evidence, no secret is in the DOM."""
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="authconform-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        browser = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            browser.get((suite_run[0] / "summary.html").resolve().as_uri())
            headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "table.matrix th")]
            assert any(h.startswith("memory") for h in headers), headers
            assert any(h.startswith("sqlite") for h in headers), headers
            rows = browser.find_elements(By.CSS_SELECTOR, "table.matrix tbody tr.ok, "
                                         "table.matrix tbody tr.problem")
            assert len(rows) == len({c for c, _ in EXPECTED})
            warned = browser.find_element(By.CSS_SELECTOR, "td.o-warned")
            passed = browser.find_element(By.CSS_SELECTOR, "td.o-passed")
            assert warned.value_of_css_property("background-color") != (
                passed.value_of_css_property("background-color")
            )
            cell = next(
                c for c in browser.find_elements(By.CSS_SELECTOR, "td.o-failed a")
                if "without Cache-Control" in (c.get_attribute("title") or "")
            )
            detail = browser.find_element(By.ID, (cell.get_attribute("href") or "").split("#")[1])
            assert not detail.is_displayed()
            cell.click()
            assert detail.is_displayed()
            shown = detail.text
            assert "observed: token response without Cache-Control <b>no-store</b>" in shown
            assert "expected: Cache-Control: no-store" in shown
            assert "spec: RFC6749-5.1 (MUST)" in shown
            assert "> POST https://as.example/token" in shown
            assert "[redacted:access_token]" in shown
            assert not browser.find_elements(By.TAG_NAME, "script")
            assert not browser.find_elements(By.TAG_NAME, "img")
            dom = browser.execute_script(
                "return document.documentElement.outerHTML + document.body.textContent"
            )
            leaked = [k for k, v in SECRETS.items() if v in dom]
            assert not leaked, f"the rendered page holds the planted {leaked}"
        finally:
            browser.quit()
