from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0009_counters'),
    ]

    operations = [
        migrations.AddField(
            model_name='worker',
            name='ray_node',
            field=models.CharField(blank=True, max_length=128),
        ),
    ]
