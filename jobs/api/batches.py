"""/v1/batches: create (JSON, or multipart with the file), list, retrieve, cancel."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api import schema
from jobs.api.common import bracketed, cursor_page, int_param, list_body
from jobs.api.errors import ApiError
from jobs.api.files import RawContentNegotiation
from jobs.api.parsers import FormParser, MultiPartParser, StrictJSONParser
from jobs.api.renderers import OpenAIJSONRenderer
from jobs.api.serializers import MetadataField
from jobs.models import Batch
from jobs.services import batches as batch_service
from jobs.services import files as file_service
from jobs.services import partial, quotas, scheduling, skipped
from jobs.services import retry as retry_service
from jobs.services.batches import BatchRequest
from jobs.services.expiry import expire_overdue
from jobs.services.objects import batch_object
from jobs.services.safe_json import shown


class BatchListApi(APIView):
    parser_classes = [StrictJSONParser, MultiPartParser, FormParser]

    class CreateInputSerializer(serializers.Serializer):
        input_file_id = serializers.CharField(required=False)
        file = serializers.FileField(required=False, allow_empty_file=True)
        endpoint = serializers.CharField(required=False)
        model = serializers.CharField(required=False)
        completion_window = serializers.CharField(required=False, default="24h")
        metadata = MetadataField()
        # Checked by the service (jobs/services/webhook_urls.py), which says why a URL is refused.
        webhook_url = serializers.CharField(required=False, allow_blank=True, default="")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            has_id, has_file = "input_file_id" in attrs, "file" in attrs
            if has_id == has_file:
                which = "not both" if has_id else "one is required"
                raise serializers.ValidationError(
                    {"input_file_id": f"Give either input_file_id (JSON) or file (multipart upload): {which}."}
                )
            if has_id and "endpoint" not in attrs:
                raise serializers.ValidationError({"endpoint": "This field is required."})
            if has_file and "model" not in attrs:
                raise serializers.ValidationError({"model": "This field is required with file."})
            return attrs

    @extend_schema(
        operation_id="listBatches",
        summary="List batches",
        tags=["Batches"],
        parameters=schema.BATCH_LIST_PARAMETERS,
        responses={200: schema.BatchList, **schema.errors(400)},
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        # Stopped and handed over, not finalized here: the housekeeper (or a worker) does that.
        expire_overdue(owner=request.user, finalize=False)
        rows, has_more = cursor_page(
            Batch.objects.owned_by(request.user).select_related("webhook_delivery"),
            params.get("after"),
            int_param(params, "limit", 20, 1, 100),
            True,
            "batch",
        )
        plan = scheduling.queue_plan()
        return Response(list_body([batch_object(batch, plan) for batch in rows], has_more))

    @extend_schema(
        operation_id="createBatch",
        summary="Create a batch",
        tags=["Batches"],
        request=schema.BATCH_CREATE,
        responses={200: schema.BatchObject, **schema.errors(400, 404, 413, 429)},
        description="Validates the input file in the same call: the batch is in_progress (queued) or failed "
        "(with its line errors), never validating.",
    )
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
            output_expires_after=file_service.parse_expires_after(
                bracketed(request.data, "output_expires_after"), "output_expires_after"
            ),
            # Read as sent (a serializer field would coerce 1 to "1"): the service checks it.
            priority=quotas.parse_priority(_raw(request, "priority"), request.user),
            invalid_lines=skipped.parse_mode(_raw(request, "invalid_lines")),
        )
        if "file" in data:
            batch = batch_service.create_batch_from_upload(request.user, data["file"], req)
        else:
            batch = batch_service.create_batch(request.user, data["input_file_id"], req)
        return Response(batch_object(batch))


def _raw(request: Request, name: str) -> Any:
    """A field of the body as sent: JSON's own type, or a form's string (QueryDict is a dict)."""
    return request.data.get(name) if isinstance(request.data, dict) else None


class BatchDetailApi(APIView):
    @extend_schema(
        operation_id="retrieveBatch",
        summary="Retrieve a batch",
        tags=["Batches"],
        responses={200: schema.BatchObject, **schema.errors(404)},
    )
    def get(self, request: Request, batch_id: str) -> Response:
        return Response(batch_object(batch_service.get_batch(request.user, batch_id)))


class BatchResultsApi(APIView):
    """batchsite's extension: the lines finished so far, streamed from what is durably stored."""

    content_negotiation_class = RawContentNegotiation
    renderer_classes = [OpenAIJSONRenderer]

    @extend_schema(
        operation_id="batchResultsSoFar",
        summary="Download a batch's results so far",
        tags=["Batches"],
        parameters=schema.BATCH_RESULTS_PARAMETERS,
        responses=schema.BATCH_RESULTS,
        description="batchsite extension: JSONL of every line of the batch's output (or error) file finished "
        "so far, each once and byte for byte as the final file holds it; for a finished batch, its file.",
        extensions={"x-batchsite-extension": True},
    )
    def get(self, request: Request, batch_id: str) -> StreamingHttpResponse:
        which = request.query_params.get("file", "output")
        if which not in partial.FILES:
            raise ApiError(
                f"Invalid 'file': expected 'output' or 'error', got {shown(which)}.", param="file", code="invalid_value"
            )
        batch = batch_service.get_batch(request.user, batch_id)
        response = StreamingHttpResponse(partial.lines(batch, which), content_type="application/jsonl")
        response["Content-Disposition"] = f'attachment; filename="{partial.download_name(batch, which)}"'
        return response


class BatchCancelApi(APIView):
    @extend_schema(
        operation_id="cancelBatch",
        summary="Cancel a batch",
        tags=["Batches"],
        request=None,
        responses={200: schema.BatchObject, **schema.errors(404, 409)},
    )
    def post(self, request: Request, batch_id: str) -> Response:
        batch = batch_service.cancel_batch(batch_service.get_batch(request.user, batch_id))
        return Response(batch_object(batch))


class BatchRetryApi(APIView):
    """batchsite's extension: a new batch of the lines whose results are in the error file."""

    class InputSerializer(serializers.Serializer):
        # Checked by the service: a ChoiceField's message would echo the raw value,
        # which the JSON renderer cannot encode when it holds a lone surrogate.
        filter = serializers.CharField(required=False, default="all")

    @extend_schema(
        operation_id="retryBatch",
        summary="Retry a batch's failed lines",
        tags=["Batches"],
        request=schema.BATCH_RETRY,
        responses={200: schema.BatchObject, **schema.errors(400, 404, 409, 429)},
        description="batchsite extension: a new batch of exactly the input lines whose results are in this "
        "finished batch's error file, with metadata.retry_of set.",
        extensions={"x-batchsite-extension": True},
    )
    def post(self, request: Request, batch_id: str) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        batch = retry_service.retry_batch(request.user, batch_id, serializer.validated_data["filter"])
        return Response(batch_object(batch))
