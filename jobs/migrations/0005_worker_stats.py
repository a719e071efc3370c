from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0004_expiry"),
    ]

    operations = [
        migrations.AddField(
            model_name="worker",
            name="stats",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
