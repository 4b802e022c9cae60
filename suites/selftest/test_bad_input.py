"""Bad input gets one clear line and a usage error, never a traceback or a false pass.

Unknown backends, unreachable stores, uncategorised skips and checks without a spec
marker, each run through pytester on a throw-away project.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

import authconform._session
from fixtures.mutants.harness import clean_env

STORE_CHECK = """
async def test_uses_the_store(backend):
    assert await backend.get_code("some-code") is None
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A throw-away project that opted in to our fixtures (as a backend author's does)."""
    clean_env(monkeypatch)
    monkeypatch.delenv("AUTHCONFORM_NO_PLUGINS", raising=False)
    pytester.makeconftest('pytest_plugins = ["authconform.fixtures"]\n')
    return pytester


@pytest.fixture
def ours(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory the plugin treats as our shipped suites (in-process runs only)."""
    clean_env(monkeypatch)
    root = pytester.mkdir("oursuites")
    monkeypatch.setattr(authconform._session, "SUITES_DIR", root.resolve())
    return root


def free_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def error_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stderr.lines if line.startswith("ERROR:")]


def assert_clean_usage_error(result: pytest.RunResult) -> str:
    """Exit code 4, exactly one ``ERROR:`` line, no traceback, nothing passed; the line."""
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "Traceback" not in output, output
    lines = error_lines(result)
    assert len(lines) == 1, output
    assert not re.search(r"\b\d+ passed|PASSED", output), output
    return lines[0]


def test_unknown_backend_is_a_usage_error_listing_the_available_names(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_check=STORE_CHECK)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--backend=nosuch")
    line = assert_clean_usage_error(result)
    assert line.startswith("ERROR: unknown backend 'nosuch'"), line
    for name in ("fakeredis", "memory", "postgres", "redis", "sqlite"):
        assert f"{name} (authconform (built-in))" in line, line
    assert "package.module:factory" in line


@pytest.mark.parametrize(
    "value",
    ["nosuchmodule_xyz:factory", "authconform.backends.memory:nosuch", ":factory", "mod:"],
)
def test_bad_module_path_is_a_usage_error(project: pytest.Pytester, value: str) -> None:
    project.makepyfile(test_check=STORE_CHECK)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", f"--backend={value}")
    line = assert_clean_usage_error(result)
    assert line.startswith("ERROR: backend "), line


def test_unreachable_redis_is_one_clear_line(project: pytest.Pytester) -> None:
    project.makepyfile(test_check=STORE_CHECK)
    port = free_port()
    result = project.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--backend=redis",
        f"--authconform-redis-url=redis://127.0.0.1:{port}/0",
    )
    line = assert_clean_usage_error(result)
    assert f"127.0.0.1:{port}" in line, line  # what was probed
    assert "--authconform-redis-url" in line and "AUTHCONFORM_REDIS_URL" in line, line  # the fix


def test_unreachable_postgres_is_one_clear_line(project: pytest.Pytester) -> None:
    project.makepyfile(test_check=STORE_CHECK)
    port = free_port()
    result = project.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--backend=postgres",
        f"--authconform-postgres-url=postgresql://postgres@127.0.0.1:{port}/test",
    )
    line = assert_clean_usage_error(result)
    assert f"127.0.0.1:{port}" in line, line
    assert "--authconform-postgres-url" in line and "AUTHCONFORM_POSTGRES_URL" in line, line


@pytest.mark.parametrize("service", ["redis", "postgres"])
def test_unreachable_store_message_never_shows_the_password(
    project: pytest.Pytester, service: str
) -> None:
    project.makepyfile(test_check=STORE_CHECK)
    port = free_port()
    password = "hunter2-" + os.urandom(6).hex()
    url = (
        f"redis://user:{password}@127.0.0.1:{port}/0"
        if service == "redis"
        else f"postgresql://postgres:{password}@127.0.0.1:{port}/test"
    )
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--backend={service}", f"--authconform-{service}-url={url}"
    )
    line = assert_clean_usage_error(result)
    assert f"127.0.0.1:{port}" in line, line
    output = result.stdout.str() + result.stderr.str()
    assert password not in output, "the store's password appears in the output"


def test_unreachable_store_is_not_probed_when_no_check_needs_a_backend(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_check="def test_plain():\n    pass\n")
    result = project.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--backend=redis",
        f"--authconform-redis-url=redis://127.0.0.1:{free_port()}/0",
    )
    result.assert_outcomes(passed=1)


SKIPS = """
import pytest

def test_bare_skip():
    pytest.skip()

def test_uncategorised_reason():
    pytest.skip("the store is slow today")

@pytest.mark.skip(reason="later")
def test_marker_without_category():
    pass

def test_categorised_reason():
    pytest.skip("unavailable: redis at 127.0.0.1:1 refused; start it")

@pytest.mark.skip(reason="not-applicable: memory keeps no restart state")
def test_categorised_marker():
    pass
"""


def _spec_marked(source: str) -> str:
    """The same checks, each citing a spec (our checks must)."""
    return source.replace("\ndef test_", "\n@pytest.mark.authconform_spec('RFC6749-4.1.2')"
                          "\ndef test_")


def test_skip_of_ours_without_a_category_is_a_failure(
    pytester: pytest.Pytester, ours: Path
) -> None:
    (ours / "test_skips.py").write_text(_spec_marked(SKIPS))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rA", str(ours))
    # a skip marker is evaluated at setup, so it turns into an error rather than a failure
    result.assert_outcomes(failed=2, errors=1, skipped=2)
    output = result.stdout.str()
    assert "skip reason must start with one of not-applicable:" in output
    result.stdout.fnmatch_lines(
        [
            "ERROR *test_marker_without_category*",
            "FAILED *test_bare_skip*",
            "FAILED *test_uncategorised_reason*",
        ]
    )


def test_skips_of_a_users_own_tests_stay_skips(pytester: pytest.Pytester, ours: Path) -> None:
    pytester.makepyfile(test_skips=SKIPS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rA", "test_skips.py")
    result.assert_outcomes(skipped=5)
    assert "skip reason must start" not in result.stdout.str()


def test_check_of_ours_without_a_spec_marker_is_a_usage_error(
    pytester: pytest.Pytester, ours: Path
) -> None:
    (ours / "test_unmarked.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.authconform_spec('RFC6749-4.1.2')\n"
        "def test_marked():\n    pass\n\n"
        "def test_unmarked():\n    pass\n"
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", str(ours))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert "test_unmarked" in output and "@spec(...)" in output, output


def test_users_own_tests_need_no_spec_marker(pytester: pytest.Pytester, ours: Path) -> None:
    checks = pytester.mkdir("suites") / "contract"
    checks.mkdir()
    (checks / "test_plain.py").write_text("def test_plain():\n    pass\n")
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "suites").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("spec_id", "level", "problem"),
    [
        ("RFC0000-1.2", "MUST", "unknown document"),
        ("rfc6749-4.1.2", "MUST", "does not match"),
        ("RFC6749-4.1.2", "OUGHT", "is not one of"),
    ],
)
def test_bad_spec_marker_is_a_usage_error(
    pytester: pytest.Pytester, ours: Path, spec_id: str, level: str, problem: str
) -> None:
    (ours / "test_bad.py").write_text(
        "import pytest\n\n"
        f"@pytest.mark.authconform_spec({spec_id!r}, level={level!r})\n"
        "def test_cites_nonsense():\n    pass\n"
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", str(ours))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert problem in output, output
