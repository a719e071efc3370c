from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("v1/", include("jobs.api.urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]

handler400 = "jobs.api.errors.bad_request"
handler404 = "jobs.api.errors.not_found"
handler500 = "jobs.api.errors.server_error"
