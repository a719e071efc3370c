from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.services import webhook_secrets


class Command(BaseCommand):
    help = (
        "Show USERNAME's webhook signing secret (made on first use), or --rotate it: the old one keeps "
        "signing beside the new one for 24 hours. The secret is the last line printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--rotate", action="store_true", help="Make a new secret")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}")
        if options["rotate"]:
            secret = webhook_secrets.rotate(user)
            self.stderr.write(
                f"New webhook secret for {user.get_username()!r}; the previous one also signs until "
                f"{secret.previous_until:%Y-%m-%d %H:%M:%S} UTC:"
            )
        else:
            secret = webhook_secrets.get_or_create(user)
            self.stderr.write(f"Webhook secret for {user.get_username()!r} (verify webhook-signature with it):")
        self.stdout.write(secret.secret)
