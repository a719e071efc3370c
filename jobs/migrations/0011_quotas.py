# Per-user quotas and fair-share weights (jobs.Quota), decayed worker time per
# user (jobs.ShareUsage), and batch priority with its permission (issue 18).
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("jobs", "0010_worker_ray_node"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="priority",
            field=models.SmallIntegerField(choices=[(-1, "low"), (0, "normal"), (1, "high")], default=0),
        ),
        migrations.AlterModelOptions(
            name="batch",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [("high_priority", "Can submit batches with priority high")],
                "verbose_name_plural": "batches",
            },
        ),
        migrations.CreateModel(
            name="Quota",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "max_queued_batches",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="Queued or running batches at once; empty: the group's or the setting",
                        null=True,
                    ),
                ),
                (
                    "max_queued_requests",
                    models.PositiveBigIntegerField(
                        blank=True,
                        help_text="Requests in queued or running batches; empty: the group's or the setting",
                        null=True,
                    ),
                ),
                (
                    "max_stored_bytes",
                    models.PositiveBigIntegerField(
                        blank=True, help_text="Bytes of files kept; empty: the group's or the setting", null=True
                    ),
                ),
                (
                    "weight",
                    models.FloatField(
                        blank=True,
                        help_text="Share of worker time relative to others (default 1; 2 gets twice a weight-1 user's)",
                        null=True,
                    ),
                ),
                (
                    "group",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="quota",
                        to="auth.group",
                    ),
                ),
                (
                    "user",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="quota",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("group__isnull", True), ("user__isnull", False)),
                            models.Q(("group__isnull", False), ("user__isnull", True)),
                            _connector="OR",
                        ),
                        name="quota_user_xor_group",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("weight__isnull", True), models.Q(("weight__gt", 0), ("weight__lte", 1000)), _connector="OR"
                        ),
                        name="quota_weight_range",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="ShareUsage",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        serialize=False,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("seconds", models.FloatField(default=0.0)),
                ("updated_at", models.DateTimeField()),
            ],
        ),
    ]
