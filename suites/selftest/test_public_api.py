"""The public surface is listed in sorted ``__all__`` lists, and every listed name exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

PUBLIC_MODULES = ["authconform", "authconform.contract"]


def _isort_key(name: str) -> tuple[int, list[object]]:
    """ruff RUF022 order: SCREAMING_CASE, then CamelCase, then the rest; natural within each."""
    if name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return group, natural


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_sorted(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert names == sorted(names, key=_isort_key), (
        f"{module_name}.__all__ is not sorted (constants, classes, functions; "
        f"alphabetical within each): expected {sorted(names, key=_isort_key)}"
    )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"{module_name}.__all__ lists {duplicates} twice"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_name_in_all_resolves(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ lists names the module lacks: {missing}"
    namespace: dict[str, object] = {}
    exec(f"from {module_name} import *", namespace)  # the star import is the API
    assert set(module.__all__) <= set(namespace)


def test_top_level_reexports_are_the_contract_objects() -> None:
    import authconform
    import authconform.contract
    import authconform.errors

    for name in authconform.__all__:
        obj = getattr(authconform, name)
        home = authconform.contract if hasattr(authconform.contract, name) else authconform.errors
        assert obj is getattr(home, name), f"authconform.{name} is a different object"


def test_docs_send_backend_authors_to_public_names_only() -> None:
    """docs/contract.md and README name no private module, and every helper they list exists."""
    import authconform.contract

    repo = Path(__file__).resolve().parents[2]
    for doc in ("docs/contract.md", "README.md"):
        text = (repo / doc).read_text()
        private = sorted(set(re.findall(r"`(authconform(?:\.\w+)*\._\w+)", text)))
        assert not private, f"{doc} sends readers to private modules: {private}"
        assert "../" not in text, f"{doc} points outside the repository"
    text = (repo / "docs" / "contract.md").read_text()
    start = text.index("Use the helpers of `authconform.contract`")
    listed = re.findall(r"`(\w+)`", text[start : text.index("\n\n", start)])
    assert len(listed) >= 10, listed
    missing = [name for name in listed if name not in authconform.contract.__all__]
    assert not missing, f"docs/contract.md lists helpers authconform.contract lacks: {missing}"


def test_the_sample_user_project_uses_public_names_only() -> None:
    """fixtures/userproject (driven by test_fresh_venv) imports nothing private of ours."""
    import ast

    repo = Path(__file__).resolve().parents[2]
    found = []
    for path in sorted((repo / "fixtures" / "userproject").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("authconform"):
                module = importlib.import_module(node.module or "")
                public = set(getattr(module, "__all__", ()))
                for alias in node.names:
                    if node.module not in PUBLIC_MODULES or alias.name not in public:
                        found.append(f"{path.name}:{node.lineno}: {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                found += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names
                          if a.name.startswith("authconform") and a.name not in PUBLIC_MODULES]
    assert not found, f"the sample project uses non-public names: {found}"
