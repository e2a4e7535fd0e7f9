from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

# The file served by ``file``; the test points it at a temporary file.
FILE_PATH = ""


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django", content_type="text/plain")


def item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse(
        {
            "id": item_id,
            "url": reverse("item", args=[item_id]),
            "absolute": request.build_absolute_uri(),
            "query": request.GET.getlist("q"),
            "remote": request.META["REMOTE_ADDR"],
        }
    )


@csrf_exempt
def echo(request: HttpRequest) -> JsonResponse:
    if request.content_type == "application/json":
        data = json.loads(request.body)
    else:
        data = {key: request.POST.getlist(key) for key in request.POST}
    return JsonResponse({"method": request.method, "data": data}, status=201)


def protected(request: HttpRequest) -> HttpResponse:
    return HttpResponse("csrf passed")


@csrf_exempt
def upload(request: HttpRequest) -> JsonResponse:
    upload = request.FILES["upload"]
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    return JsonResponse({"size": upload.size, "sha256": digest.hexdigest()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def generate() -> Iterator[bytes]:
        for i in range(20):
            yield f"row {i}\n".encode()

    return StreamingHttpResponse(generate(), content_type="text/plain")


def file(request: HttpRequest) -> FileResponse:
    return FileResponse(open(FILE_PATH, "rb"), content_type="application/octet-stream")


def crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a Django view failed")
