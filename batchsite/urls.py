from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from jobs.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("v1/", include("jobs.api.urls")),
    # The API reference, from /v1/openapi.json: Redoc to read, Swagger UI to try requests.
    path("docs/", SpectacularRedocView.as_view(url_name="openapi-schema"), name="api-docs"),
    path("docs/swagger/", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="api-swagger"),
    # Prometheus: a bearer token (BATCHSITE_METRICS_TOKEN) or a staff session.
    path("metrics", metrics_view, name="metrics"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]

handler400 = "jobs.api.errors.bad_request"
handler404 = "jobs.api.errors.not_found"
handler500 = "jobs.api.errors.server_error"
