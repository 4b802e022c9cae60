"""One declaration per setting: CLI option, env variable and ini key derive from it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Option"]


@dataclass(frozen=True)
class Option:
    """One setting: ``--<cli>``, ``AUTHCONFORM_<NAME>``, ini ``authconform_<name>``."""

    name: str
    help: str
    default: str | None = None
    cli: str | None = None
    multiple: bool = False
    flag: bool = False

    @property
    def flag_name(self) -> str:
        """The CLI spelling."""
        return self.cli or "--authconform-" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable."""
        return "AUTHCONFORM_" + self.name.upper()

    @property
    def ini(self) -> str:
        """The ini key."""
        return "authconform_" + self.name
