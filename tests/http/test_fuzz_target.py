"""The fuzz target in ``tests/fuzz/`` still imports and passes on its own seed inputs."""

from __future__ import annotations

import pytest

from tests.fuzz import fuzz_parser


def test_fuzz_target_passes_its_seeds() -> None:
    seeds = fuzz_parser.seeds()
    assert len(seeds) > 300
    for data in seeds:
        fuzz_parser.one_input(data)
    fuzz_parser.one_input(b"")


def test_fuzz_target_rejects_an_unknown_engine() -> None:
    with pytest.raises(SystemExit):
        fuzz_parser.main(["--engine", "nope"])
