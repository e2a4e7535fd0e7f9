"""Settings of the test project: no database, no installed apps, the usual middleware."""

from __future__ import annotations

SECRET_KEY = "only-for-tests-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.wsgi.django_project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATABASES: dict[str, object] = {}
USE_TZ = True
# Django exports TIME_ZONE as the process's TZ (America/Chicago unless set), which every
# later test in the same worker, and its subprocesses, would then inherit.
TIME_ZONE = "UTC"
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
LOGGING_CONFIG = None
