from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from jobs.api.errors import not_found
from jobs.metrics import metrics_view

# The vendored Redoc and Swagger UI pages start themselves with an inline
# script and style their own elements inline (Redoc runs a worker from a blob):
# only these two pages, which show the schema and take no user content, get that.
docs_policy = csp_update({"script-src": [UNSAFE_INLINE], "style-src": [UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/", include("jobs.api.urls")),
    # The API root itself: the JSON 404, not CommonMiddleware's redirect to /v1/ (which drops a POST's body).
    path("v1", not_found),
    # The API reference, from /v1/openapi.json: Redoc to read, Swagger UI to try requests.
    path("docs/", docs_policy(SpectacularRedocView.as_view(url_name="openapi-schema")), name="api-docs"),
    path("docs/swagger/", docs_policy(SpectacularSwaggerView.as_view(url_name="openapi-schema")), name="api-swagger"),
    # Prometheus: a bearer token (BATCHSITE_METRICS_TOKEN) or a staff session.
    path("metrics", metrics_view, name="metrics"),
    # The web UI, including sign-in (/accounts/login/), which the admin and the
    # browsable API use too: DRF's own login view is not routed, as it has no
    # throttling of failed attempts.
    path("", include("jobs.web.urls")),
]

handler400 = "jobs.api.errors.bad_request"
handler404 = "jobs.api.errors.not_found"
handler500 = "jobs.api.errors.server_error"
