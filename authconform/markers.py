"""The marks our checks carry, prefixed ``authconform_``.

The plugin loads in every project where authconform is installed, so a host project's
own ``spec`` or ``live`` mark stays its own.

Write them through these aliases::

    from authconform.markers import requires, spec

    @spec("RFC6749-4.1.2", level="MUST")
    @requires(Capability.CODES)
    async def test_authorization_code_is_single_use(backend): ...

Select with ``-m authconform_live`` and so on.
"""

from __future__ import annotations

import pytest

__all__ = ["MARKERS", "live", "race", "requires", "restart", "spec"]

#: name -> ini ``markers`` line (registered by the plugin)
MARKERS: dict[str, str] = {
    "authconform_spec": (
        "authconform_spec(*ids, level='MUST'): normative text this check enforces "
        "(ids like RFC6749-4.1.2, CONTRACT-single-use; level MUST, SHOULD or MAY)"
    ),
    "authconform_requires": (
        "authconform_requires(*capabilities, any_of=False): storage capabilities the "
        "check needs (with any_of, one of them is enough)"
    ),
    "authconform_race": "authconform_race: a concurrency check",
    "authconform_restart": "authconform_restart: a check that restarts or kills a process",
    "authconform_live": "authconform_live: a check of a live server over HTTP",
}

spec = pytest.mark.authconform_spec
requires = pytest.mark.authconform_requires
race = pytest.mark.authconform_race
restart = pytest.mark.authconform_restart
live = pytest.mark.authconform_live
