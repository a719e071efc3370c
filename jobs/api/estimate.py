"""POST /v1/batches/estimate (an extension): a batch's tokens, time and place in the queue, before it exists."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api import schema
from jobs.api.parsers import StrictJSONParser
from jobs.services import estimate as estimate_service
from jobs.services import skipped


class EstimateObject(serializers.Serializer):
    object = schema.const("batch.estimate")
    input_file_id = serializers.CharField()
    endpoint = serializers.CharField()
    model = serializers.CharField(help_text="The model its lines name (or the one given).")
    requests = serializers.IntegerField(help_text="Lines the batch would run.")
    skipped_requests = serializers.IntegerField(
        help_text='Bad lines left out (invalid_lines "skip": they would go to the error file); 0 otherwise.'
    )
    prompt_tokens = serializers.IntegerField(
        allow_null=True,
        help_text="Prompt tokens, counted with the model's own tokenizer and chat template as the engine counts "
        "them (the sum of the lines' usage.prompt_tokens). Scaled from the counted lines when counting "
        "did not finish within its bound (complete false); null if nothing could be counted.",
    )
    max_output_tokens = serializers.IntegerField(
        allow_null=True,
        help_text="The most output tokens the lines allow (max_tokens × n, the model's default where unset).",
    )
    failing_requests = serializers.IntegerField(
        allow_null=True, help_text="Lines the engine would refuse (past the model's context, say)."
    )
    counted_requests = serializers.IntegerField(
        help_text="Lines counted within the bound (BATCHSITE_ESTIMATE_SECONDS)."
    )
    complete = serializers.BooleanField(help_text="Every line was counted: the token figures are exact.")
    estimated_seconds = serializers.FloatField(
        allow_null=True, help_text="Worker time the lines take at this model's measured rate; null before any run."
    )
    queue_position = serializers.IntegerField(help_text="Where it would wait if submitted now (1: next to start).")
    estimated_start_time = schema.timestamp("When it would start")
    estimated_completion_time = schema.timestamp("When it would be done; null with no worker alive or no rate known")


class BatchEstimateApi(APIView):
    parser_classes = [StrictJSONParser]

    class InputSerializer(serializers.Serializer):
        input_file_id = serializers.CharField()
        endpoint = serializers.CharField()
        model = serializers.CharField(required=False)
        invalid_lines = serializers.CharField(
            required=False, help_text='As on create: "fail" (default) or "skip" (estimate the valid lines).'
        )

    @extend_schema(
        operation_id="estimateBatch",
        summary="Estimate a batch before creating it",
        tags=["Batches"],
        request=InputSerializer,
        responses={200: EstimateObject, **schema.errors(400, 404)},
        description="batchsite extension: the prompt tokens (exact, the engine's tokenizer and chat template), "
        "most output tokens, worker time and queue position a batch of this file would have if created now. "
        "Nothing is created.",
        extensions={"x-batchsite-extension": True},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        mode = skipped.parse_mode(data.get("invalid_lines"))  # the same refusals as create
        return Response(
            estimate_service.estimate(request.user, data["input_file_id"], data["endpoint"], data.get("model"), mode)
        )
