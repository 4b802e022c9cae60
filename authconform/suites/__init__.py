"""Suites users run: contract, live, race, restart (``pytest --pyargs authconform.suites.<kind>``)."""
