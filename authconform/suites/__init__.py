"""The suites users run: ``pytest --pyargs authconform.suites.<kind>``."""
