"""Fault injection for tests, kept out of the shipped code (issue 20 item 7).

In the test process, tests patch with the fixtures in tests/conftest.py that
call ``hooks``. In a child process (a worker started by a test), the test puts
this folder on PYTHONPATH and sets FAULT_* variables: ``sitecustomize`` here
runs at the interpreter's start and installs the same hooks once Django is set
up. Nothing under jobs/ or batchsite/ knows about any of it.
"""
