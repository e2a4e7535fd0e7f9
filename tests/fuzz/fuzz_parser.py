"""Fuzz target for ``bastion.http``'s request parser: atheris when installed, else hypothesis.

    python3 -m tests.fuzz.fuzz_parser --minutes 10             # atheris if present
    python3 -m tests.fuzz.fuzz_parser --engine hypothesis --minutes 10
    python3 -m tests.fuzz.fuzz_parser --engine atheris --minutes 10 corpus/   # keep a corpus

Every input is fed whole and then in pieces. Either feed may end in a ProtocolError; any
other exception is a bug. After every feed the parser's buffers are within its limits, and
when both feeds are accepted they must report the same requests. See README.md here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

# Runnable as a script as well as a module: the repository root holds ``tests``.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

if TYPE_CHECKING:
    from bastion.http import ProtocolError
    from tests.http.strategies import Recording


def one_input(data: bytes) -> None:
    """The target: the first byte picks how the rest is cut into feeds."""
    # Imported here, not above, so that atheris can instrument the parser as it is first
    # imported (instrumenting everything already loaded takes minutes).
    from tests.http.strategies import feed_checked, split

    if not data:
        return
    stream = data[1:]
    step = data[0] + 1
    whole, whole_error = feed_checked([stream])
    cut, cut_error = feed_checked(split(stream, list(range(step, len(stream), step))))
    for sink, error in ((whole, whole_error), (cut, cut_error)):
        check_reported(sink, error)
    if whole_error is None and cut_error is None:
        assert whole.summary() == cut.summary(), (stream, step)


def check_reported(sink: Recording, error: ProtocolError | None) -> None:
    from tests.http.strategies import LIMITS

    for head in sink.heads:
        assert len(head.target) <= LIMITS.max_request_line
        # Touching every derived field is part of the test: none may raise.
        assert isinstance(head.path, str) and isinstance(head.query_string, bytes)
        assert isinstance(head.raw_path, bytes)
        assert head.authority is None or isinstance(head.authority, str)
    assert all(len(body) <= LIMITS.max_body_bytes for body in sink.bodies)
    assert error is None or 400 <= error.status <= 505


def seeds() -> list[bytes]:
    """Starting inputs: the refusal tables of the test suite and a few valid pipelines."""
    from tests.engine.test_vectors import VECTORS
    from tests.http.test_parser import REFUSALS

    valid = [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET http://example.com:8080/a?b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
        b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;e=v\r\nhello\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n",
    ]
    bodies = [*valid, *(data for _, data, _, _ in REFUSALS), *(v.data for v in VECTORS)]
    return [bytes([step]) + body for body in bodies for step in (0, 6, 255)]


def run_atheris(seconds: int, extra: list[str]) -> None:
    import atheris

    # Coverage feedback from Bastion's code and the checks, not from the standard library.
    with atheris.instrument_imports(include=["bastion", "tests"]):
        for name in ("bastion.http", "tests.http.strategies", "tests.engine.test_vectors"):
            importlib.import_module(name)
    corpus = [Path(arg) for arg in extra if not arg.startswith("-")]
    if corpus and not corpus[0].is_file():  # a file is an input to replay, not a corpus
        # libFuzzer reads its starting inputs from the first corpus directory.
        directory = corpus[0]
        directory.mkdir(parents=True, exist_ok=True)
        for index, seed in enumerate(seeds()):
            (directory / f"seed-{index:04d}").write_bytes(seed)
    argv = [sys.argv[0], f"-max_total_time={seconds}", "-max_len=8192", *extra]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def run_hypothesis(seconds: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.http.strategies import mutate, mutations, pipelines, wire

    inputs = st.one_of(
        st.builds(
            lambda step, pipeline, changes: bytes([step]) + mutate(wire(pipeline), changes),
            st.integers(0, 255),
            pipelines(),
            mutations(max_size=8),
        ),
        st.builds(
            lambda seed, changes: mutate(seed, changes), st.sampled_from(seeds()), mutations()
        ),
        st.binary(max_size=2048),
    )

    @settings(
        max_examples=2000,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def round_of(data: bytes) -> None:
        one_input(data)

    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        round_of()
        rounds += 1
        print(f"hypothesis: {rounds * 2000} inputs, no failure", flush=True)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    options, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    seconds = max(1, int(options.minutes * 60))
    engine = options.engine
    has_atheris = importlib.util.find_spec("atheris") is not None
    if engine == "auto":
        engine = "atheris" if has_atheris else "hypothesis"
    if engine == "atheris":
        if not has_atheris:
            parser.error("atheris is not installed: pip install atheris, or --engine hypothesis")
        run_atheris(seconds, extra)
    else:
        run_hypothesis(seconds)


if __name__ == "__main__":
    main()
