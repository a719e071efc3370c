# What /metrics counted for a chunk that finalize sent back (Chunk.counted): the
# request and token counters never fall, and a rerun's lines count once (issue 20 item 4).
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0012_worker_time"),
    ]

    operations = [
        migrations.AddField(
            model_name="chunk",
            name="counted",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
