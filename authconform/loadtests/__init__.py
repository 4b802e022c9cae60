"""Locust load tests shipped with authconform: ``locustfile.py`` and ``gates.toml``.

Data for ``authconform bench server``, found with ``importlib.resources``. The locustfile
runs only inside a Locust subprocess; nothing here is imported by the plugin or by pytest
(its name is not a test module's), and importing this package imports nothing.
"""
