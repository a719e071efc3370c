"""Create the first admin account, once, and say how to sign in.

``bin/start`` runs this on the embedded default, so that a newcomer can reach
the web UI without reading further. It does nothing when a superuser already
exists, so the password is printed only the first time. More users:
``manage.py createsuperuser`` or the admin's Users page.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create an admin account with a generated password if no superuser exists, and print how to sign in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="The site's address, for the message")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        username = options["username"]
        if User.objects.filter(username=username).exists():
            raise CommandError(
                f"No superuser exists and the name {username!r} is taken by an ordinary user: "
                "create one with `manage.py createsuperuser`."
            )
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        url = options["url"].rstrip("/") + "/accounts/login/"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "batchsite: created the first admin account. Sign in to the web UI at",
                    f"    {url}",
                    f"    user name: {username}",
                    f"    password:  {password}",
                    "This password is shown only this once: keep it, or change it in the admin",
                    "(/admin/password_change/). Add users with `manage.py createsuperuser` or in the admin.",
                    "",
                ]
            )
        )
