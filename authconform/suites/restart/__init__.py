"""Restart suite: records survive store and server restarts, loss windows, store faults.

Run it with ``pytest --pyargs authconform.suites.restart --backend=redis`` (or
``authconform test restart ...``). It starts its own stores (``authconform.procs``) and
never restarts one it was given by URL unless ``--authconform-restart-cmd`` says how.
"""
