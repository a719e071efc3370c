"""The OpenAPI description of /v1 (drf-spectacular), served at /v1/openapi.json.

The views return plain dicts built by jobs/services/objects.py (the same dicts
webhooks carry), so the objects are described here, field by field, with
documentation-only serializers: they never touch a request. Fields that are
batchsite's own, not OpenAI's, say so in their description and carry
``x-batchsite-extension: true``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers

from jobs.models import ENDPOINT_KINDS, BatchStatus, FilePurpose
from jobs.services.files import EXPIRES_MAX_SECONDS, EXPIRES_MIN_SECONDS
from jobs.services.retry import FILTERS

EXTENSION = "batchsite extension: not in OpenAI's object; OpenAI's clients ignore it."


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "jobs.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer bs-...`."}


def ext(field_class: type[serializers.Field], **kwargs: Any) -> serializers.Field:
    """A field that is batchsite's extension: its description says so, and ``mark_extensions``
    adds the vendor key. (Set in the constructor: serializers deep-copy their fields from
    the constructor's arguments, so an attribute changed afterwards would be lost.)"""
    kwargs["help_text"] = f"{kwargs['help_text']} ({EXTENSION})" if kwargs.get("help_text") else EXTENSION
    return field_class(**kwargs)


# OpenAPI links: which response supplies which request's ids, so clients and
# fuzzers (schemathesis' stateful phase) can chain create -> read -> act.
# (operation id, its parameters, and optionally its request body), by name.
Link = tuple[str, dict[str, str]] | tuple[str, dict[str, str], dict[str, str]]
LINKS: dict[tuple[str, str], dict[str, Link]] = {
    ("/v1/files", "post"): {
        "RetrieveFile": ("retrieveFile", {"file_id": "$response.body#/id"}),
        "DownloadFile": ("downloadFile", {"file_id": "$response.body#/id"}),
        "DeleteFile": ("deleteFile", {"file_id": "$response.body#/id"}),
        "CreateBatch": (
            "createBatch",
            {},
            {"input_file_id": "$response.body#/id", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        ),
    },
    ("/v1/batches", "post"): {
        "RetrieveBatch": ("retrieveBatch", {"batch_id": "$response.body#/id"}),
        "CancelBatch": ("cancelBatch", {"batch_id": "$response.body#/id"}),
        "RetryBatch": ("retryBatch", {"batch_id": "$response.body#/id"}),
        "RetrieveInputFile": ("retrieveFile", {"file_id": "$response.body#/input_file_id"}),
    },
    ("/v1/batches/{batch_id}/retry", "post"): {
        "RetrieveRetry": ("retrieveBatch", {"batch_id": "$response.body#/id"}),
    },
}


def add_links(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: the LINKS above on each operation's 200 response."""
    for (path, method), links in LINKS.items():
        response = result["paths"][path][method]["responses"]["200"]
        response["links"] = {}
        for name, (operation_id, parameters, *body) in links.items():
            link: dict[str, Any] = {"operationId": operation_id}
            if parameters:
                link["parameters"] = parameters
            if body:
                link["requestBody"] = body[0]
            response["links"][name] = link
    return result


def mark_extensions(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: ``x-batchsite-extension: true`` on every property marked by ``ext``."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if EXTENSION in str(node.get("description", "")):
                node["x-batchsite-extension"] = True
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(result.get("components", {}))
    walk(result.get("paths", {}))
    return result


def timestamp(help_text: str, nullable: bool = True) -> serializers.IntegerField:
    return serializers.IntegerField(help_text=f"{help_text} (Unix seconds).", allow_null=nullable)


def const(value: str) -> serializers.Field:
    """A string that is always ``value`` (OpenAI's ``object`` fields); inline, not a named enum."""
    # The annotation is read from the field's class, so each constant gets its own.
    field_class = type(f"Const_{value}", (serializers.CharField,), {})
    return extend_schema_field({"type": "string", "enum": [value]})(field_class)()


# ------------------------------------------------------------------ errors
class ErrorDetail(serializers.Serializer):
    message = serializers.CharField(help_text="What went wrong, fit to show a person.")
    type = serializers.CharField(help_text="invalid_request_error, authentication_error, rate_limit_error, ...")
    param = serializers.CharField(allow_null=True, help_text="The request field at fault, if one is.")
    code = serializers.CharField(allow_null=True, help_text="A stable code to branch on, e.g. not_found.")


class Error(serializers.Serializer):
    error = ErrorDetail()


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    words = {
        400: "The request is malformed, or names something that cannot be used.",
        401: "No API key, or a wrong one.",
        404: "No such object for this user (another user's ids are not found either).",
        409: "The object is in a state that does not allow this.",
        413: "The upload is larger than the limit.",
        429: "The queue has no room for this now; try again later.",
    }
    return {code: OpenApiResponse(Error, description=words[code]) for code in (401, *statuses)}


# ------------------------------------------------------------------ files
class FileObject(serializers.Serializer):
    id = serializers.CharField(help_text="file-...")
    object = const("file")
    bytes = serializers.IntegerField(min_value=0)
    created_at = timestamp("When the file was stored", nullable=False)
    expires_at = timestamp("When the file expires; null: kept until deleted")
    filename = serializers.CharField()
    purpose = serializers.ChoiceField(choices=FilePurpose.values)
    status = serializers.ChoiceField(choices=["uploaded", "processed", "error"], help_text="Always processed here.")
    status_details = serializers.CharField(allow_null=True, help_text="Deprecated by OpenAI; always null.")


class FileList(serializers.Serializer):
    object = const("list")
    data = FileObject(many=True)  # type: ignore[assignment]  # a field named like Serializer's .data/.errors
    first_id = serializers.CharField(allow_null=True)
    last_id = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


class FileDeleted(serializers.Serializer):
    id = serializers.CharField()
    object = const("file")
    deleted = serializers.BooleanField()


EXAMPLE_LINE = (
    '{"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": '
    '"HuggingFaceTB/SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}}\n'
)


def expires_after_schema(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"OpenAI's expiration policy: the file expires `seconds` after `anchor` ({name}).",
        "properties": {
            "anchor": {"type": "string", "enum": ["created_at"]},
            "seconds": {"type": "integer", "minimum": EXPIRES_MIN_SECONDS, "maximum": EXPIRES_MAX_SECONDS},
        },
        "required": ["anchor", "seconds"],
        "additionalProperties": False,
    }


FILE_UPLOAD = {
    "multipart/form-data": {
        "type": "object",
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "description": "A JSONL file of batch requests.",
                "example": EXAMPLE_LINE,
            },
            "purpose": {"type": "string", "enum": ["batch"]},
            # The openai SDK sends expires_after={"anchor", "seconds"} as these two fields.
            "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
            "expires_after[seconds]": {
                "type": "integer",
                "minimum": EXPIRES_MIN_SECONDS,
                "maximum": EXPIRES_MAX_SECONDS,
                "description": "The file expires this many seconds after it is created. Without it, "
                "batch inputs expire after 30 days (BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS).",
            },
        },
        "required": ["file", "purpose"],
    }
}
FILE_CONTENT = {
    (200, "application/octet-stream"): OpenApiResponse(
        {"type": "string", "format": "binary"}, description="The file's bytes (JSONL)."
    ),
    **{(code, "application/json"): response for code, response in errors(404).items()},
}
BATCH_RESULTS = {
    (200, "application/jsonl"): OpenApiResponse(
        {"type": "string", "format": "binary"}, description="The lines finished so far (JSONL)."
    ),
    **{(code, "application/json"): response for code, response in errors(400, 404).items()},
}
BATCH_RESULTS_PARAMETERS = [
    OpenApiParameter(
        "file", str, enum=["output", "error"], description=f"Which file's lines; output by default. ({EXTENSION})"
    ),
]
FILE_LIST_PARAMETERS = [
    OpenApiParameter("purpose", str, enum=FilePurpose.values, description="Only files of this purpose."),
    OpenApiParameter("order", str, enum=["asc", "desc"], description="By created_at; desc by default."),
    OpenApiParameter("after", str, description="A file id: the page after it."),
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, description="10000 by default."),
]


# ------------------------------------------------------------------ batches
class BatchError(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    line = serializers.IntegerField(allow_null=True, help_text="1-based line of the input file, when it is one.")


class BatchErrors(serializers.Serializer):
    object = const("list")
    data = BatchError(many=True)  # type: ignore[assignment]  # a field named like Serializer's .data/.errors


class RequestCounts(serializers.Serializer):
    total = serializers.IntegerField(min_value=0)
    completed = serializers.IntegerField(min_value=0)
    failed = serializers.IntegerField(min_value=0)


class InputTokensDetails(serializers.Serializer):
    cached_tokens = serializers.IntegerField()


class OutputTokensDetails(serializers.Serializer):
    reasoning_tokens = serializers.IntegerField()


class BatchUsage(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    input_tokens_details = InputTokensDetails()
    output_tokens = serializers.IntegerField()
    output_tokens_details = OutputTokensDetails()
    total_tokens = serializers.IntegerField()


@extend_schema_field(
    {"type": "object", "additionalProperties": {"type": "string", "maxLength": 512}, "maxProperties": 16}
)
class Metadata(serializers.DictField):
    pass


class BatchObject(serializers.Serializer):
    id = serializers.CharField(help_text="batch_...")
    object = const("batch")
    endpoint = serializers.CharField(help_text="The endpoint of every line: " + ", ".join(ENDPOINT_KINDS) + ".")
    errors = BatchErrors(allow_null=True, help_text="Why the batch failed: its input's line errors, or the cause.")  # type: ignore[assignment]  # a field named like Serializer's .data/.errors
    input_file_id = serializers.CharField()
    completion_window = serializers.CharField()
    status = serializers.ChoiceField(choices=BatchStatus.values)
    output_file_id = serializers.CharField(allow_null=True)
    error_file_id = serializers.CharField(allow_null=True)
    created_at = timestamp("When the batch was created", nullable=False)
    in_progress_at = timestamp("When it was queued (validation passed)")
    expires_at = timestamp("When the completion window ends")
    finalizing_at = timestamp("When its results began to be assembled")
    completed_at = timestamp("When it completed")
    failed_at = timestamp("When it failed")
    expired_at = timestamp("When it expired")
    cancelling_at = timestamp("When cancelling began")
    cancelled_at = timestamp("When it was cancelled")
    request_counts = RequestCounts()
    metadata = Metadata(allow_null=True)
    model = serializers.CharField(help_text="The model every line runs on.")
    usage = BatchUsage(allow_null=True, help_text="Tokens of the lines that ran, once the batch has ended.")
    queue_position = ext(
        serializers.IntegerField,
        allow_null=True,
        help_text="1: next to start, 2, 3, ...; 0: started; null once it has ended or while no worker is up.",
    )
    progress_percent = ext(serializers.FloatField, help_text="Lines done (completed or failed) of the total.")
    estimated_completion_time = ext(
        serializers.IntegerField,
        allow_null=True,
        help_text="When it is expected to end, from the queue and measured rates (Unix seconds).",
    )
    started_at = ext(serializers.IntegerField, allow_null=True, help_text="When a worker first took it (Unix seconds).")
    webhook_url = ext(serializers.CharField, allow_null=True, help_text="POSTed to when the batch ends.")
    webhook_status = ext(
        serializers.ChoiceField,
        choices=["pending", "delivered", "failing", "gave_up"],
        allow_null=True,
        help_text="Delivery of the batch's event to webhook_url; null without a webhook_url.",
    )
    retry_of = ext(
        serializers.CharField,
        allow_null=True,
        help_text="The batch this one retries (POST /v1/batches/{id}/retry); null for any other batch.",
    )
    priority = ext(
        serializers.ChoiceField,
        choices=["low", "normal", "high"],
        help_text="Orders the owner's own batches: higher first, then first come, first served.",
    )


class BatchList(serializers.Serializer):
    object = const("list")
    data = BatchObject(many=True)  # type: ignore[assignment]  # a field named like Serializer's .data/.errors
    first_id = serializers.CharField(allow_null=True)
    last_id = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


_WINDOW = {
    "type": "string",
    "enum": list(settings.BATCHSITE.completion_windows),
    "description": "How long the batch may take (BATCHSITE_COMPLETION_WINDOWS lists the windows allowed).",
}
_ENDPOINT = {"type": "string", "enum": list(ENDPOINT_KINDS)}
_PRIORITY = {
    "type": "string",
    "enum": ["low", "normal", "high"],
    "default": "normal",
    "description": f"Orders your own batches; high is for staff and jobs.high_priority. ({EXTENSION})",
}
_INVALID_LINES = {
    "type": "string",
    "enum": ["fail", "skip"],
    "default": "fail",
    "description": "fail: a bad line fails the batch (OpenAI's behaviour); skip: bad lines go to the error file, "
    f"counted in request_counts.failed, and the rest run. ({EXTENSION})",
}
BATCH_CREATE = {
    "application/json": {
        "type": "object",
        "properties": {
            "input_file_id": {"type": "string", "minLength": 1, "description": "A file uploaded with purpose batch."},
            "endpoint": _ENDPOINT,
            "completion_window": _WINDOW,
            "metadata": {
                "type": "object",
                "nullable": True,
                "maxProperties": 16,
                "additionalProperties": {"type": "string", "maxLength": 512},
            },
            "output_expires_after": expires_after_schema("of the output and error files"),
            "model": {
                "type": "string",
                "minLength": 1,
                "description": f"The model of the lines that name none. ({EXTENSION})",
            },
            "webhook_url": {"type": "string", "format": "uri", "description": f"POSTed to at the end. ({EXTENSION})"},
            "priority": _PRIORITY,
            "invalid_lines": _INVALID_LINES,
        },
        "required": ["input_file_id", "endpoint", "completion_window"],
    },
    "multipart/form-data": {
        "type": "object",
        "description": f"Upload and create in one call. ({EXTENSION}) Metadata goes as metadata[key]=value "
        "fields (as the openai SDKs send it), or as JSON text in one metadata field.",
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "model": {"type": "string", "minLength": 1},
            "endpoint": _ENDPOINT,
            "completion_window": _WINDOW,
            "webhook_url": {"type": "string", "format": "uri"},
            "priority": _PRIORITY,
            "invalid_lines": _INVALID_LINES,
        },
        "required": ["file", "model"],
    },
}
BATCH_RETRY = {
    "application/json": {
        "type": "object",
        "description": f"Which lines of the error file to run again. ({EXTENSION})",
        "properties": {
            "filter": {
                "type": "string",
                "enum": list(FILTERS),
                "default": "all",
                "description": "failed: lines that ran and failed; cancelled/expired: lines that never ran.",
            }
        },
    }
}
BATCH_LIST_PARAMETERS = [
    OpenApiParameter("after", str, description="A batch id: the page after it."),
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 100}, description="20 by default."),
]


# ------------------------------------------------------------------ models
class ModelObject(serializers.Serializer):
    id = serializers.CharField(help_text="The name lines send as body.model.")
    object = const("model")
    created = timestamp("When an operator registered it", nullable=False)
    owned_by = serializers.CharField()
    endpoints = ext(
        serializers.ListField,
        child=serializers.ChoiceField(choices=list(ENDPOINT_KINDS)),
        help_text="The batch endpoints it serves.",
    )


class ModelList(serializers.Serializer):
    object = const("list")
    data = ModelObject(many=True)  # type: ignore[assignment]  # a field named like Serializer's .data/.errors
