from django.db import migrations, models


def error_files_are_batch_output(apps, schema_editor):
    # OpenAI labels a batch's error file "batch_output", as its output file; the SDKs'
    # FileObject allows no "batch_error", and files.list(purpose="batch_output") must list them.
    apps.get_model("jobs", "File").objects.filter(purpose="batch_error").update(purpose="batch_output")


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0007_scaleout'),
    ]

    operations = [
        migrations.RunPython(error_files_are_batch_output, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='file',
            name='purpose',
            field=models.CharField(choices=[('batch', 'Batch'), ('batch_output', 'Batch Output')], max_length=20),
        ),
        migrations.AddField(
            model_name='batch',
            name='retry_of',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
    ]
