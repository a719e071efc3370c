"""Runs at the start of every Python process with tests/faults on PYTHONPATH (a test's
child process): once Django is set up, install the faults its FAULT_* variables ask for."""

import os

if any(name.startswith("FAULT_") for name in os.environ):
    import django

    _setup = django.setup

    def _setup_with_faults(*args, **kwargs):  # type: ignore[no-untyped-def]
        _setup(*args, **kwargs)
        from tests.faults import hooks

        hooks.install_from_env()

    django.setup = _setup_with_faults
