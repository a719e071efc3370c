"""/v1/batches: create (JSON, or multipart with the file), list, retrieve, cancel."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api.common import cursor_page, int_param, list_body
from jobs.models import Batch
from jobs.services import batches as batch_service
from jobs.services import scheduling
from jobs.services.batches import BatchRequest
from jobs.services.objects import batch_object


class BatchListApi(APIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class CreateInputSerializer(serializers.Serializer):
        input_file_id = serializers.CharField(required=False)
        file = serializers.FileField(required=False, allow_empty_file=True)
        endpoint = serializers.CharField(required=False)
        model = serializers.CharField(required=False)
        completion_window = serializers.CharField(required=False, default="24h")
        metadata = serializers.JSONField(required=False, allow_null=True)
        webhook_url = serializers.URLField(required=False, allow_blank=True, default="")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            has_id, has_file = "input_file_id" in attrs, "file" in attrs
            if has_id == has_file:
                raise serializers.ValidationError(
                    {"input_file_id": "Give either input_file_id (JSON) or file (multipart upload), not both."}
                )
            if has_id and "endpoint" not in attrs:
                raise serializers.ValidationError({"endpoint": "This field is required."})
            if has_file and "model" not in attrs:
                raise serializers.ValidationError({"model": "This field is required with file."})
            return attrs

    def get(self, request: Request) -> Response:
        params = request.query_params
        rows, has_more = cursor_page(
            Batch.objects.owned_by(request.user),
            params.get("after"),
            int_param(params, "limit", 20, 1, 100),
            True,
            "batch",
        )
        plan = scheduling.queue_plan()
        return Response(list_body([batch_object(batch, plan) for batch in rows], has_more))

    def post(self, request: Request) -> Response:
        serializer = self.CreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        req = BatchRequest(
            endpoint=data.get("endpoint"),
            completion_window=data["completion_window"],
            metadata=batch_service.check_metadata(data.get("metadata")),
            model=data.get("model"),
            webhook_url=data["webhook_url"],
        )
        if "file" in data:
            batch = batch_service.create_batch_from_upload(request.user, data["file"], req)
        else:
            batch = batch_service.create_batch(request.user, data["input_file_id"], req)
        return Response(batch_object(batch))


class BatchDetailApi(APIView):
    def get(self, request: Request, batch_id: str) -> Response:
        return Response(batch_object(batch_service.get_batch(request.user, batch_id)))


class BatchCancelApi(APIView):
    def post(self, request: Request, batch_id: str) -> Response:
        batch = batch_service.cancel_batch(batch_service.get_batch(request.user, batch_id))
        return Response(batch_object(batch))
