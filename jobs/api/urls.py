from django.urls import path, re_path
from drf_spectacular.views import SpectacularJSONAPIView

from jobs.api import batches, estimate, files, registry
from jobs.api.errors import not_found

urlpatterns = [
    path("files", files.FileListApi.as_view()),
    path("files/<str:file_id>", files.FileDetailApi.as_view()),
    path("files/<str:file_id>/content", files.FileContentApi.as_view()),
    path("batches", batches.BatchListApi.as_view()),
    # Before the detail route: "estimate" is not a batch id.
    path("batches/estimate", estimate.BatchEstimateApi.as_view()),
    path("batches/<str:batch_id>", batches.BatchDetailApi.as_view()),
    path("batches/<str:batch_id>/cancel", batches.BatchCancelApi.as_view()),
    path("batches/<str:batch_id>/retry", batches.BatchRetryApi.as_view()),
    path("batches/<str:batch_id>/results", batches.BatchResultsApi.as_view()),
    path("models", registry.ModelListApi.as_view()),
    path("models/<path:model>", registry.ModelDetailApi.as_view()),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
    # Anything else under /v1/ is an OpenAI-shaped 404, also with DEBUG on.
    re_path(r"^.*$", not_found),
]
