"""The extras in pyproject.toml and the one-line hints of ``authconform._extras`` agree."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from authconform._extras import EXTRAS, extra_for

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=;!~]", r, maxsplit=1)[0].lower() for r in requirements}


def test_every_user_extra_is_known_and_all_holds_them_but_not_dev() -> None:
    users = set(OPTIONAL) - {"all", "dev"}
    assert users == set(EXTRAS), f"pyproject extras {sorted(users)} vs _extras {sorted(EXTRAS)}"
    (all_line,) = OPTIONAL["all"]
    inside = set(all_line.split("[", 1)[1].rstrip("]").split(","))
    assert inside == users, f"all = {sorted(inside)}, expected {sorted(users)}"


def test_each_extra_installs_the_modules_its_hint_names() -> None:
    dists = packages_distributions()  # module -> distributions (installed: the dev venv)
    for extra, modules in EXTRAS.items():
        wanted = _names(OPTIONAL[extra])
        for module in modules:
            providers = {d.lower() for d in dists.get(module, [])}
            assert providers & wanted, (
                f"extra {extra} names module {module}, provided by {providers or 'nothing'}, "
                f"but installs {sorted(wanted)}"
            )
            assert extra_for(module) is not None
