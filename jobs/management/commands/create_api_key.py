from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key for USERNAME (created if missing). The key is the last line printed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label for the key")
        parser.add_argument("--no-create-user", action="store_true", help="Fail if the user does not exist")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = options["username"]
        user = User.objects.filter(username=username).first()
        if user is None:
            if options["no_create_user"]:
                raise CommandError(f"No user named {username!r}")
            user = User.objects.create_user(username=username)
            self.stderr.write(f"Created user {username!r} (no password: API access only)")
        _, raw = ApiKey.generate(user, options["name"])
        self.stderr.write(f"API key for {username!r}; it is shown only now:")
        self.stdout.write(raw)
