"""Django settings. Every value that varies by deployment comes from batchsite/env.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF

from batchsite.env import (
    BASE_DIR,
    Reader,
    metrics_token,
    object_store,
    read_https_settings,
    read_limits,
    read_scheduler_settings,
    read_webhook_settings,
    read_worker_settings,
    secret_key,
    trusted_proxies,
)

env = Reader()

DATA_DIR = Path(env.text("BATCHSITE_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)
FILES_DIR = DATA_DIR / "files"
MODELS_DIR = DATA_DIR / "models"
UPLOAD_TMP_DIR = DATA_DIR / "tmp"
# Per-chunk result parts are in the file store too (under parts/), beside the files.
for _directory in (FILES_DIR, MODELS_DIR, UPLOAD_TMP_DIR, DATA_DIR / "static"):
    _directory.mkdir(parents=True, exist_ok=True)

DEBUG = env.flag("DEBUG", False)
SECRET_KEY = secret_key(env, DATA_DIR)
ALLOWED_HOSTS = env.items("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.items("CSRF_TRUSTED_ORIGINS", ["http://localhost", "http://127.0.0.1"])

# Behind a TLS proxy (README, "On PostgreSQL, and on many hosts"). With all of them set,
# `manage.py check --deploy` has nothing to say (tests/test_env.py).
_https = read_https_settings(env)
SECURE_SSL_REDIRECT = _https.ssl_redirect
SECURE_HSTS_SECONDS = _https.hsts_seconds
SECURE_HSTS_INCLUDE_SUBDOMAINS = _https.hsts_include_subdomains
SECURE_HSTS_PRELOAD = _https.hsts_preload
SESSION_COOKIE_SECURE = _https.session_cookie_secure
CSRF_COOKIE_SECURE = _https.csrf_cookie_secure
SECURE_PROXY_SSL_HEADER = _https.proxy_ssl_header

BATCHSITE = read_limits(env)
BATCHSITE_WORKER = read_worker_settings(env)
BATCHSITE_WEBHOOKS = read_webhook_settings(env)
# Batch input files expire this long after upload unless the upload says otherwise
# (OpenAI's default: 30 days); 0 keeps them until deleted.
BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS = env.integer("BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS", 30 * 86400, minimum=0)
# GET /metrics: this bearer token, or a staff session ("" = staff sessions only).
BATCHSITE_METRICS_TOKEN = metrics_token(env)
# BATCHSITE_STORAGE=s3://bucket/prefix: files in object storage (see STORAGES); None: under FILES_DIR.
BATCHSITE_OBJECT_STORE = object_store(env)
BATCHSITE_SCHEDULER = read_scheduler_settings(env)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "axes",
    "drf_spectacular",
    # Redoc and Swagger UI served from our own static files: the service runs offline.
    "drf_spectacular_sidecar",
    "jobs",
]

MIDDLEWARE = [
    # Outermost: its x-request-id and log line cover every answer, the other middleware's too.
    "jobs.api.middleware.RequestIdMiddleware",
    # A chunked body jobs.chunked refused (batchsite/wsgi.py) is answered before anything reads it.
    "jobs.api.middleware.ChunkedRefusalMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every answer (django-csp): CONTENT_SECURITY_POLICY below.
    "csp.middleware.CSPMiddleware",
    "jobs.api.errors.RefuseNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF, which reads the form body: a body past a limit is a page, not a 500.
    "jobs.web.middleware.FormBodyMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "jobs.api.errors.ApiErrorMiddleware",
    # Last, as django-axes requires: turns a locked-out sign-in into its 429 page.
    "axes.middleware.AxesMiddleware",
]

# Scripts and styles from this site only (issue 20 item 11): the templates have
# no inline <script>, style="..." or on...= handlers, so an injected one does
# nothing. The vendored API docs pages (Redoc, Swagger UI) get a wider policy
# of their own in batchsite/urls.py.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

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
            "libraries": {"web": "jobs.web.templatetags"},
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

# Sign-in: Django's own views (/accounts/login/) for the pages, the admin and the
# browsable API alike; django-axes counts failed attempts per user name and
# client address and refuses that pair for a while after too many.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
AXES_FAILURE_LIMIT = env.integer("BATCHSITE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env.number("BATCHSITE_LOGIN_COOLOFF_MINUTES", 15.0, minimum=0.1))
# By the pair: one address guessing cannot lock a user out from everywhere,
# and one user name cannot lock out everyone behind a shared address.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "web/locked_out.html"
# Behind a reverse proxy every client's REMOTE_ADDR is the proxy's, so a
# lockout keyed on it would lock a user out for everyone. The client's address
# comes from X-Forwarded-For only when the peer is one of these proxies
# (jobs/web/client_ip.py); a header from anyone else is ignored.
BATCHSITE_TRUSTED_PROXIES = trusted_proxies(env)
AXES_CLIENT_IP_CALLABLE = "jobs.web.client_ip.client_ip"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# The web UI's own stylesheet and script, and htmx, vendored: nothing is fetched from a CDN.
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "jobs.storage.LocalStorage", "OPTIONS": {"location": str(FILES_DIR)}},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if BATCHSITE_OBJECT_STORE is not None:
    from boto3.s3.transfer import TransferConfig

    STORAGES["default"] = {
        "BACKEND": "jobs.storage.S3Storage",
        "OPTIONS": {
            "bucket_name": BATCHSITE_OBJECT_STORE.bucket,
            "location": BATCHSITE_OBJECT_STORE.prefix,
            "endpoint_url": BATCHSITE_OBJECT_STORE.endpoint_url,
            "region_name": BATCHSITE_OBJECT_STORE.region,
            "addressing_style": BATCHSITE_OBJECT_STORE.addressing_style,
            # Names are fresh ids: no HEAD per save to find a free name.
            "file_overwrite": True,
            # An upload moves to the store in 5 MiB parts (S3's smallest), two in
            # flight: about 10 MiB of memory per upload, whatever the file's size.
            "transfer_config": TransferConfig(
                multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=2
            ),
        },
    }
# Serve the pages' and the admin's assets without collectstatic, so the laptop
# default needs no build step; gunicorn serves them through WhiteNoise.
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
        "jobs.api.renderers.OpenAIJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "jobs.api.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI schema at /v1/openapi.json (jobs/api/schema.py describes the objects).
SPECTACULAR_SETTINGS = {
    "TITLE": "batchsite API",
    "DESCRIPTION": (
        "An OpenAI-compatible Files + Batches API for offline LLM inference. Objects are OpenAI's; "
        "fields and operations marked `x-batchsite-extension` are batchsite's own additions."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/v1",
    "SCHEMA_PATH_PREFIX_TRIM": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "AUTHENTICATION_WHITELIST": ["jobs.api.auth.ApiKeyAuthentication"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "jobs.api.schema.mark_extensions",
        "jobs.api.schema.add_links",
    ],
    "ENUM_NAME_OVERRIDES": {
        "BatchStatusEnum": "jobs.models.batches.BatchStatus",
        # The constant ``object`` field of each OpenAI object.
        "ListObjectEnum": ["list"],
        "FileObjectEnum": ["file"],
        "BatchObjectEnum": ["batch"],
        "ModelObjectEnum": ["model"],
    },
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": env.text("LOG_LEVEL", "INFO").upper()},
    # django-axes logs every sign-in (and itself, in every process) at INFO;
    # failures and lock-outs, which matter, are warnings.
    "loggers": {"axes": {"level": "WARNING"}},
}
