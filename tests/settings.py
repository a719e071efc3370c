"""Test settings: the real settings, on a throwaway data directory.

The test database is a file (not SQLite's in-memory default) so that server
and worker subprocesses started by tests see the same rows.
"""

import os
import tempfile

os.environ.setdefault("BATCHSITE_DATA_DIR", tempfile.mkdtemp(prefix="batchsite-test-"))

from batchsite.settings import *  # noqa: E402,F403
from batchsite.settings import DATA_DIR, DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
