"""/v1/files: upload, list, retrieve, content, delete."""

from __future__ import annotations

from collections.abc import Iterable

from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api import schema
from jobs.api.common import UnixTimeField, bracketed, cursor_page, int_param, list_body
from jobs.api.errors import ApiError
from jobs.api.parsers import FormParser, MultiPartParser
from jobs.api.renderers import OpenAIJSONRenderer
from jobs.models import File, FilePurpose
from jobs.services import files as file_service
from jobs.services.objects import unix


class FileOutputSerializer(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()
    created_at = UnixTimeField()
    status = serializers.SerializerMethodField()
    expires_at = serializers.SerializerMethodField()
    status_details = serializers.SerializerMethodField()

    class Meta:
        model = File
        fields = [
            "id",
            "object",
            "bytes",
            "created_at",
            "expires_at",
            "filename",
            "purpose",
            "status",
            "status_details",
        ]

    def get_object(self, obj: File) -> str:
        return "file"

    def get_status(self, obj: File) -> str:
        return "processed"  # files are stored whole before the response is sent

    def get_expires_at(self, obj: File) -> int | None:
        return unix(obj.expires_at)

    def get_status_details(self, obj: File) -> None:
        return None


class FileListApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    class CreateInputSerializer(serializers.Serializer):
        file = serializers.FileField(allow_empty_file=True)
        purpose = serializers.CharField()

    @extend_schema(
        operation_id="listFiles",
        summary="List files",
        tags=["Files"],
        parameters=schema.FILE_LIST_PARAMETERS,
        responses={200: schema.FileList, **schema.errors(400)},
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError("Invalid 'order': use 'asc' or 'desc'.", param="order", code="invalid_value")
        queryset = File.objects.owned_by(request.user).live()
        if params.get("purpose"):
            # An unknown purpose matches nothing; not querying for it also
            # keeps text PostgreSQL cannot hold (NUL) out of the query.
            purpose = params["purpose"]
            queryset = queryset.filter(purpose=purpose) if purpose in FilePurpose.values else queryset.none()
        rows, has_more = cursor_page(
            queryset, params.get("after"), int_param(params, "limit", 10000, 1, 10000), order == "desc", "file"
        )
        return Response(list_body(FileOutputSerializer(rows, many=True).data, has_more))

    @extend_schema(
        operation_id="createFile",
        summary="Upload a file",
        tags=["Files"],
        request=schema.FILE_UPLOAD,
        responses={200: schema.FileObject, **schema.errors(400, 413)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.CreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        expires_after = file_service.parse_expires_after(bracketed(request.data, "expires_after"), "expires_after")
        file = file_service.store_upload(
            request.user, serializer.validated_data["file"], serializer.validated_data["purpose"], expires_after
        )
        return Response(FileOutputSerializer(file).data)


class FileDetailApi(APIView):
    @extend_schema(
        operation_id="retrieveFile",
        summary="Retrieve a file",
        tags=["Files"],
        responses={200: schema.FileObject, **schema.errors(404)},
    )
    def get(self, request: Request, file_id: str) -> Response:
        return Response(FileOutputSerializer(file_service.get_owned_file(request.user, file_id)).data)

    @extend_schema(
        operation_id="deleteFile",
        summary="Delete a file",
        tags=["Files"],
        responses={200: schema.FileDeleted, **schema.errors(404, 409)},
    )
    def delete(self, request: Request, file_id: str) -> Response:
        file = file_service.get_owned_file(request.user, file_id)
        file_service.delete_file(file)
        return Response({"id": file_id, "object": "file", "deleted": True})


DOWNLOAD_BLOCK = 1 << 16


class RawContentNegotiation(BaseContentNegotiation):
    """The openai SDK asks for content with ``Accept: application/binary``,
    which no DRF renderer offers; the body is a file either way, and errors
    are JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class FileContentApi(APIView):
    content_negotiation_class = RawContentNegotiation
    renderer_classes = [OpenAIJSONRenderer]

    @extend_schema(
        operation_id="downloadFile", summary="Download a file's content", tags=["Files"], responses=schema.FILE_CONTENT
    )
    def get(self, request: Request, file_id: str) -> FileResponse:
        file = file_service.get_owned_file(request.user, file_id)
        response = FileResponse(
            file_service.open_content(file),
            content_type="application/octet-stream",
            as_attachment=True,
            filename=file.filename,
        )
        # Streamed from the store as it is read; 64 KiB writes instead of Django's 4 KiB
        # (an output file can be gigabytes).
        response.block_size = DOWNLOAD_BLOCK
        return response
