"""Django settings. Every value that varies by deployment comes from batchsite/env.py."""

from __future__ import annotations

from pathlib import Path

from batchsite.env import (
    BASE_DIR,
    Reader,
    read_limits,
    read_scheduler_settings,
    read_worker_settings,
    secret_key,
)

env = Reader()

DATA_DIR = Path(env.text("BATCHSITE_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)
FILES_DIR = DATA_DIR / "files"
MODELS_DIR = DATA_DIR / "models"
UPLOAD_TMP_DIR = DATA_DIR / "tmp"
# Per-chunk result parts; on several hosts this must be shared storage, like FILES_DIR.
PARTS_DIR = DATA_DIR / "parts"
for _directory in (FILES_DIR, MODELS_DIR, UPLOAD_TMP_DIR, PARTS_DIR, DATA_DIR / "static"):
    _directory.mkdir(parents=True, exist_ok=True)

DEBUG = env.flag("DEBUG", False)
SECRET_KEY = secret_key(env, DATA_DIR)
ALLOWED_HOSTS = env.items("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.items("CSRF_TRUSTED_ORIGINS", ["http://localhost", "http://127.0.0.1"])

BATCHSITE = read_limits(env)
BATCHSITE_WORKER = read_worker_settings(env)
BATCHSITE_SCHEDULER = read_scheduler_settings(env)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "jobs.api.errors.ApiErrorMiddleware",
]

ROOT_URLCONF = "batchsite.urls"
WSGI_APPLICATION = "batchsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_default_db = f"sqlite:///{DATA_DIR / 'batchsite.sqlite3'}"
DATABASES = {"default": env.database("DATABASE_URL", _default_db)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes SQLite's write lock when a transaction starts, so a
    # worker's claim cannot read a chunk as pending and then lose the upgrade
    # to a write lock to another worker (the "database is locked" deadlock).
    # WAL lets the API read while a worker writes; the timeout makes writers
    # queue instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env.integer("BATCHSITE_SQLITE_TIMEOUT", 30, minimum=1),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
# Reuse connections across requests: a new one per request (and, for SQLite,
# its PRAGMAs) cost more than the request itself under polling load.
DATABASES["default"]["CONN_MAX_AGE"] = env.integer("BATCHSITE_CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# The queue plan (positions and ETAs, jobs/services/scheduling/plan.py) is
# cached per process: computing it is a few small queries, cheaper than a round
# trip to a shared cache, and needs nothing set up. Point "queue_plan" at a
# shared backend to compute it once per interval for the whole fleet.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "queue_plan": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "queue-plan"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(FILES_DIR)},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve admin assets without collectstatic, so the laptop default needs no build step.
WHITENOISE_USE_FINDERS = True

# Uploads always stream to a temporary file on the data volume (never into
# memory), and the handler counts bytes as they arrive to enforce the limit.
FILE_UPLOAD_HANDLERS = ["jobs.uploads.LimitedUploadHandler"]
FILE_UPLOAD_TEMP_DIR = str(UPLOAD_TMP_DIR)
FILE_UPLOAD_PERMISSIONS = 0o640

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # The Bearer class comes first so that DRF answers 401 (with a
        # WWW-Authenticate header), not 403, to an unauthenticated client.
        "jobs.api.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "jobs.api.errors.openai_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": env.text("LOG_LEVEL", "INFO").upper()},
}
