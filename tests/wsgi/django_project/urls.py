from __future__ import annotations

from django.urls import path

from tests.wsgi.django_project import views

urlpatterns = [
    path("", views.hello, name="hello"),
    path("items/<int:item_id>/", views.item, name="item"),
    path("echo/", views.echo, name="echo"),
    path("protected/", views.protected, name="protected"),
    path("upload/", views.upload, name="upload"),
    path("stream/", views.stream, name="stream"),
    path("file/", views.file, name="file"),
    path("crash/", views.crash, name="crash"),
]
