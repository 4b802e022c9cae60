"""Backend selection: CLI > env > ini > default, lists, module paths and entry points.

Each test runs pytest in-process (pytester) on a throw-away project whose one check
takes the ``backend_spec`` fixture, and reads which backends it was parametrized with.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fixtures.mutants.harness import clean_env

INI = """
[pytest]
{extra}
"""

CHECK = """
def test_selected(backend_spec, backend_settings):
    assert backend_settings.namespace
"""

BACKENDS_MODULE = """
from authconform.backends.memory import MemoryBackend


def alpha(settings):
    return MemoryBackend(settings)


beta = gamma = alpha
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project with one backend check, a module of factories and no AUTHCONFORM_* env."""
    clean_env(monkeypatch)
    monkeypatch.delenv("AUTHCONFORM_NO_PLUGINS", raising=False)
    pytester.makepyfile(test_check=CHECK, mybackends=BACKENDS_MODULE)
    pytester.makeconftest('pytest_plugins = ["authconform.fixtures"]\n')
    pytester.syspathinsert()
    write_ini(pytester)
    return pytester


def write_ini(pytester: pytest.Pytester, extra: str = "") -> None:
    pytester.makeini(INI.format(extra=textwrap.dedent(extra)))


def selected(pytester: pytest.Pytester, *args: str) -> list[str]:
    """The parametrize ids the check ran with, in order; every run must pass."""
    reprec = pytester.inline_run("-p", "no:cacheprovider", *args)
    passed, skipped, failed = reprec.listoutcomes()
    assert not failed and not skipped, [r.longreprtext for r in [*failed, *skipped]]
    assert reprec.ret == 0
    return [r.nodeid.split("[", 1)[1].rstrip("]") for r in passed]


def test_default_backend_is_memory(project: pytest.Pytester) -> None:
    assert selected(project) == ["memory"]


def test_ini_authconform_backend_beats_the_default(project: pytest.Pytester) -> None:
    write_ini(project, "authconform_backend =\n    mybackends:gamma\n    memory")
    assert selected(project) == ["gamma", "memory"]


def test_ini_backends_also_take_a_comma_list(project: pytest.Pytester) -> None:
    write_ini(project, "authconform_backend = mybackends:gamma, memory")
    assert selected(project) == ["gamma", "memory"]


def test_env_comma_list_beats_ini(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_ini(project, "authconform_backend = mybackends:gamma")
    monkeypatch.setenv("AUTHCONFORM_BACKEND", "mybackends:beta, memory")
    assert selected(project) == ["beta", "memory"]


def test_cli_beats_env_and_ini(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    write_ini(project, "authconform_backend = mybackends:gamma")
    monkeypatch.setenv("AUTHCONFORM_BACKEND", "mybackends:beta")
    assert selected(project, "--backend=mybackends:alpha") == ["alpha"]


def test_repeated_option_and_comma_lists_parametrize_in_order(project: pytest.Pytester) -> None:
    ids = selected(project, "--backend", "mybackends:alpha", "--backend=memory,mybackends:beta")
    assert ids == ["alpha", "memory", "beta"]


def test_the_same_backend_twice_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("-p", "no:cacheprovider", "--backend=memory,memory")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --backend lists a backend twice*"])


@pytest.mark.parametrize(
    ("value", "test_id"),
    [
        ("mypkg.store:factory", "store"),  # a factory called `factory` is named after its module
        ("mypkg.store:make_store", "make_store"),
        ("mypkg.store:Holder.build", "Holder.build"),
    ],
)
def test_package_module_factory_values_resolve(
    project: pytest.Pytester, value: str, test_id: str
) -> None:
    pkg = project.mkpydir("mypkg")
    (pkg / "store.py").write_text(
        textwrap.dedent(
            """
            from authconform.backends.memory import MemoryBackend


            def factory(settings):
                return MemoryBackend(settings)


            make_store = factory


            class Holder:
                build = staticmethod(factory)
            """
        )
    )
    assert selected(project, f"--backend={value}") == [test_id]


def test_backend_fixture_is_made_by_the_selected_factory(project: pytest.Pytester) -> None:
    project.makepyfile(
        mybackends=BACKENDS_MODULE
        + textwrap.dedent(
            """

            class Marked(MemoryBackend):
                name = "marked"


            def marked(settings):
                return Marked(settings)
            """
        ),
        test_check="""
            def test_made_by_the_factory(backend):
                assert type(backend).__name__ == "Marked"
                assert backend.name == "marked"
        """,
    )
    assert selected(project, "--backend=mybackends:marked") == ["marked"]


def test_namespace_option_follows_cli_env_ini_default_order(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(
        test_check="""
            import os

            def test_namespace(backend_settings):
                assert backend_settings.namespace == os.environ["EXPECTED_NS"]
        """
    )

    def run(expected: str, *args: str) -> None:
        monkeypatch.setenv("EXPECTED_NS", expected)
        assert selected(project, *args) == ["memory"]

    write_ini(project, "authconform_namespace = ns_from_ini")
    run("ns_from_ini")
    monkeypatch.setenv("AUTHCONFORM_NAMESPACE", "ns_from_env")
    run("ns_from_env")
    run("ns_from_cli", "--authconform-namespace=ns_from_cli")


def make_plugin_distribution(root: Path, entry: str = "thirdparty") -> Path:
    """A fake installed distribution ``fakeplug-authconform`` with one backend entry point."""
    site = root / "site"
    info = site / "fakeplug_authconform-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakeplug-authconform\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        f"[authconform.backends]\n{entry} = thirdparty_backend:make\n"
    )
    (site / "thirdparty_backend.py").write_text(
        "from authconform.backends.memory import MemoryBackend\n\n\n"
        "def make(settings):\n    return MemoryBackend(settings)\n"
    )
    return site


def test_entry_point_backend_resolves_by_name(project: pytest.Pytester) -> None:
    project.syspathinsert(make_plugin_distribution(project.path))
    project.makepyfile(
        test_check="""
            def test_source(backend_spec):
                assert backend_spec.source == "fakeplug-authconform"
        """
    )
    assert selected(project, "--backend=thirdparty") == ["thirdparty"]


def test_unknown_backend_lists_plugin_names_with_their_distribution(
    project: pytest.Pytester,
) -> None:
    project.syspathinsert(make_plugin_distribution(project.path))
    result = project.runpytest("-p", "no:cacheprovider", "--backend=nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: unknown backend 'nosuch'*thirdparty (fakeplug-authconform)*"]
    )


def test_no_plugins_limits_discovery_to_builtins(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.syspathinsert(make_plugin_distribution(project.path))
    monkeypatch.setenv("AUTHCONFORM_NO_PLUGINS", "1")
    result = project.runpytest("-p", "no:cacheprovider", "--backend=thirdparty")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: unknown backend 'thirdparty'*"])
    assert "fakeplug" not in result.stderr.str()
    # built-ins and explicit module paths still work
    assert selected(project, "--backend=memory,mybackends:alpha") == ["memory", "alpha"]


def test_a_plugin_cannot_shadow_a_builtin_name(project: pytest.Pytester) -> None:
    project.syspathinsert(make_plugin_distribution(project.path, entry="memory"))
    project.makepyfile(
        test_check="""
            def test_source(backend_spec):
                assert backend_spec.source == "authconform (built-in)"
        """
    )
    assert selected(project, "--backend=memory") == ["memory"]


def test_the_ini_key_help_names_is_the_one_read(project: pytest.Pytester) -> None:
    result = project.runpytest_inprocess("--help")
    text = " ".join(result.stdout.str().split())
    assert "[env AUTHCONFORM_BACKEND, ini authconform_backend]" in text
    assert "authconform_backend (linelist)" in text
    write_ini(project, "authconform_backend = mybackends:gamma")
    assert selected(project) == ["gamma"]


@pytest.mark.parametrize(
    ("where", "text", "hint"),
    [
        ("ini", "authconform_backends = mybackends:gamma", "authconform_backend"),
        ("ini", "authconform_redis = redis://x", "authconform_redis_url"),
        ("env", "AUTHCONFORM_BACKENDS", "AUTHCONFORM_BACKEND"),
        ("env", "AUTHCONFORM_TIMEOUTS", "AUTHCONFORM_TIMEOUT"),
    ],
)
def test_unknown_setting_of_ours_is_a_usage_error_naming_the_right_one(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str, text: str, hint: str
) -> None:
    if where == "ini":
        write_ini(project, text)
    else:
        monkeypatch.setenv(text, "mybackends:gamma")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-o", "strict_config=false")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    error = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(error) == 1 and f"did you mean {hint}?" in error[0], result.stderr.str()


@pytest.mark.parametrize(
    "args",
    [
        ["--authconform-timeout=abc"],
        ["--authconform-flows=0"],
        ["--authconform-max-wait=-1"],
        ["--authconform-instances=two"],
        ["--authconform-client-auth=private_key_jwt"],
        ["--server-url=not-a-url"],
        ["--server-url=ftp://example.com/"],
        ["--authconform-redis-url=http://127.0.0.1:6379"],
    ],
)
def test_malformed_option_value_is_one_usage_error(
    project: pytest.Pytester, args: list[str]
) -> None:
    result = project.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    error = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(error) == 1, result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
