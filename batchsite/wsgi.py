import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")

from jobs.chunked import ChunkedBodies  # noqa: E402 - needs the settings module named first

# Chunked request bodies (the Node SDK's streamed uploads) made whole for Django: jobs/chunked.py.
application = ChunkedBodies(get_wsgi_application())
