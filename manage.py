#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


# vLLM starts its engine processes with spawn, which re-imports __main__:
# the guard keeps those children from running the command again.
if __name__ == "__main__":
    main()
