"""``bastion.compat`` offers what the running Python's ``http.server`` offers."""

from __future__ import annotations

import http.server
import subprocess
import sys

import pytest

import bastion.compat
from tests.cli.running import ROOT


def test_all_is_the_standard_librarys() -> None:
    assert bastion.compat.__all__ == http.server.__all__
    for name in http.server.__all__:
        assert hasattr(bastion.compat, name)


def test_star_import_gives_the_same_names() -> None:
    script = "from {} import *\nprint(sorted(n for n in dir() if not n.startswith('_')))\n"
    names = [
        subprocess.run(
            [sys.executable, "-c", script.format(module)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        for module in ("http.server", "bastion.compat")
    ]
    assert names[0] == names[1]


def test_module_level_helpers_are_the_standard_librarys() -> None:
    for name in ("executable", "nobody_uid", "DEFAULT_ERROR_MESSAGE", "DEFAULT_ERROR_CONTENT_TYPE"):
        assert getattr(bastion.compat, name) is getattr(http.server, name)
    assert bastion.compat.HTTPStatus is http.server.HTTPStatus  # type: ignore[attr-defined]
    assert bastion.compat.__version__ == http.server.__version__  # type: ignore[attr-defined]
    assert callable(bastion.compat.test)


@pytest.mark.skipif(
    not hasattr(http.server, "CGIHTTPRequestHandler"), reason="this Python has no CGI handler"
)
def test_cgi_handler_imports_but_is_refused_when_served() -> None:
    cgi = bastion.compat.CGIHTTPRequestHandler  # type: ignore[attr-defined]
    assert cgi is http.server.CGIHTTPRequestHandler  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="CGIHTTPRequestHandler is not supported"):
        bastion.compat.HTTPServer(("127.0.0.1", 0), cgi)


def test_serving_leaves_ctrl_c_as_it_found_it() -> None:
    import signal
    import threading

    from tests.compat import handlers

    before = signal.getsignal(signal.SIGINT)
    server = bastion.compat.HTTPServer(("127.0.0.1", 0), handlers.Hello)
    with server:
        threading.Timer(0.2, server.shutdown).start()
        server.serve_forever(poll_interval=0.05)
    assert signal.getsignal(signal.SIGINT) is before
