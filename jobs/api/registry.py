"""/v1/models: the models an operator enabled, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api import schema
from jobs.api.errors import ApiError
from jobs.models import RegisteredModel
from jobs.services.objects import unix
from jobs.services.registry import enabled_models


def model_body(entry: RegisteredModel) -> dict[str, Any]:
    return {
        "id": entry.name,
        "object": "model",
        "created": unix(entry.created_at),
        "owned_by": "batchsite",
        # batchsite's extension: the batch endpoints (URLs) this model serves.
        "endpoints": entry.endpoint_urls,
    }


class ModelListApi(APIView):
    @extend_schema(
        operation_id="listModels",
        summary="List models",
        tags=["Models"],
        responses={200: schema.ModelList, **schema.errors()},
    )
    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": [model_body(m) for m in enabled_models()]})


class ModelDetailApi(APIView):
    @extend_schema(
        operation_id="retrieveModel",
        summary="Retrieve a model",
        tags=["Models"],
        responses={200: schema.ModelObject, **schema.errors(404)},
    )
    def get(self, request: Request, model: str) -> Response:
        entry = RegisteredModel.objects.enabled().filter(name=model).first()
        if entry is None:
            raise ApiError(
                f"The model '{model}' does not exist", status_code=404, code="model_not_found", param="model"
            )
        return Response(model_body(entry))
