"""Every Python sample of the documentation and the README runs, so that none of them rots.

Each block is compiled and imported as a module, in a folder that holds ``public/`` and
``static/`` with an ``index.html`` (what the static-file samples serve). A sample that
serves something is served for real: on 127.0.0.1, port 0, with a real client sending the
request its directive names (see ``tests.docs.pages.Sample``). One marked ``skip`` has only
its imports run, and is reported as skipped with its reason.
"""

from __future__ import annotations

import ast
import http.client
import importlib.util
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bastion.engine
from bastion.cli.loader import as_handler
from bastion.engine import ServerConfig
from tests.docs.pages import README, Sample, documents, samples
from tests.serving import serve

ALL = [sample for path in documents() for sample in samples(path)]
_modules = itertools.count()


def test_the_docs_have_samples() -> None:
    assert len(ALL) > 20
    assert sum(1 for sample in ALL if sample.serve) >= 8
    assert any(sample.page == README.name for sample in ALL)  # the README's are run too


def request(handler: Any, config: ServerConfig | None, sample: Sample) -> tuple[int, bytes]:
    """Serve ``handler`` on a free port and send the sample's request with http.client (or
    exchange a message over a WebSocket, with the ``websockets`` client)."""
    with serve(handler, config) as server:
        if sample.websocket:
            from websockets.sync.client import connect

            with connect(f"ws://{server.host}:{server.port}{sample.path}") as socket:
                socket.send("hello")
                reply = socket.recv(timeout=10)
            assert "hello" in reply, f"{sample.id}: the WebSocket answered {reply!r}"
            return sample.status, b""
        client = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            client.request("GET", sample.path)
            response = client.getresponse()
            return response.status, response.read()
        finally:
            client.close()


def load(sample: Sample, folder: Path, code: str) -> Any:
    module_name = f"doc_sample_{next(_modules)}"
    path = folder / f"{module_name}.py"
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(module_name, None)
    return module


def imports_of(code: str) -> str:
    tree = ast.parse(code)
    kept: list[ast.stmt] = [
        node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    return ast.unparse(ast.Module(body=kept, type_ignores=[]))


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("public", "static"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.html").write_text("<p>hello</p>\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path


@pytest.mark.parametrize("sample", ALL, ids=[sample.id for sample in ALL])
def test_sample(sample: Sample, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = sample.source()
    compile(code, sample.id, "exec")
    if sample.skip:
        load(sample, folder, imports_of(code))
        pytest.skip(f"{sample.id}: {sample.skip}")
    answers: list[tuple[int, bytes]] = []

    def run(handler: Any, binds: Any = (), config: ServerConfig | None = None, **_: Any) -> None:
        answers.append(request(handler, config, sample))

    monkeypatch.setattr(bastion.engine, "run", run)
    module = load(sample, folder, code)
    if sample.serve:
        app = getattr(module, sample.serve)
        answers.append(request(as_handler(app, f"sample:{sample.serve}"), None, sample))
    for status, body in answers:
        assert status == sample.status, f"{sample.id}: GET {sample.path} -> {status} {body[:200]!r}"
