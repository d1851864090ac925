"""The one model of llama-server's arguments: generated from llama-server, read as it reads them,
and every consumer of an argv agreeing with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.estimate import RunSettings
from harness.toolchain import (
    ServerArgsError,
    find_programs,
    parse_server_args,
    render_options,
    server_option,
)
from harness.toolchain import _server_options as generated

OPTIONS_FILE = Path(generated.__file__)


@pytest.mark.component("llama.cpp")
def test_the_options_table_is_what_the_pinned_llama_server_says() -> None:
    built = find_programs()
    if built is None:
        pytest.skip("llama.cpp's programs are not built (scripts/setup.sh builds them)")
    help_text = subprocess.run(
        [str(built.path("llama-server")), "--help"], capture_output=True, text=True, check=True
    ).stdout
    fresh = render_options(help_text, built.commit[:7])
    assert fresh == OPTIONS_FILE.read_text(encoding="utf-8"), (
        "llama-server's options changed: regenerate harness/toolchain/_server_options.py with "
        "render_options (see tests/test_server_args.py)"
    )


def test_aliases_arity_env_and_defaults_come_from_the_help() -> None:
    ctx = server_option("--ctx-size")
    assert ctx.names == ("-c", "--ctx-size") and ctx.arity == 1
    assert ctx.env == "LLAMA_ARG_CTX_SIZE"
    kvo = server_option("--kv-offload")
    assert kvo.arity == 0 and "-nkvo" in kvo.negatives and "--no-kv-offload" in kvo.negatives
    assert server_option("--control-vector-layer-range").arity == 2
    assert server_option("--lora-scaled").arity == 1  # FNAME:SCALE,... at this commit
    assert server_option("--flash-attn").names == ("-fa", "--flash-attn")


def test_parsed_as_llama_server_parses() -> None:
    args = parse_server_args(
        ["-c", "512", "--ctx_size", "1024", "-nkvo", "-fa", "off", "-t", "4,4"]
    )
    assert args.last("--ctx-size") is not None and args.last("--ctx-size").value == "1024"
    assert [a.index for a in args.every("--ctx-size")] == [0, 2]
    kvo = args.last("--kv-offload")
    assert kvo is not None and kvo.negative
    assert args.last("--threads") is not None and args.last("--threads").value == "4,4"
    assert "--tensor-split" not in args


@pytest.mark.parametrize(
    ("argv", "message", "index"),
    [
        (["--ctx-size=8192"], "write --ctx-size 8192 as two arguments", 0),
        (["-c", "1", "--ctx-sise", "2"], "did you mean --ctx-size?", 2),
        (["--control-vector-layer-range", "1"], "needs 2 values", 0),
        (["-m"], "-m needs a value", 0),
    ],
)
def test_what_llama_server_refuses_is_refused(argv: list[str], message: str, index: int) -> None:
    with pytest.raises(ServerArgsError, match=message) as caught:
        parse_server_args(argv)
    assert caught.value.index == index


def test_the_environment_applies_first_and_the_command_line_wins() -> None:
    env = {"LLAMA_ARG_CTX_SIZE": "4096", "LLAMA_ARG_N_PARALLEL": "2", "LLAMA_ARG_KV_UNIFIED": "0"}
    settings_ = RunSettings.from_cmd(["-c", "1024"], env)
    assert settings_.ctx_size == 1024 and settings_.parallel == 2
    assert settings_.kv_unified is False  # a boolean's variable sets it either way


def test_the_harness_reads_system_prompt_file_itself() -> None:
    args = parse_server_args(["-m", "m.gguf", "--system-prompt-file", "p.txt"])
    assert args.last("--system-prompt-file") is not None


# Options whose values the consumers interpret, with value generators.
_VALUES = {
    "--ctx-size": st.integers(0, 1 << 20).map(str),
    "--batch-size": st.integers(1, 8192).map(str),
    "--ubatch-size": st.integers(1, 8192).map(str),
    "--parallel": st.integers(1, 64).map(str),
    "--cache-type-k": st.sampled_from(["f16", "q8_0", "q4_0", "F16", "bf16"]),
    "--flash-attn": st.sampled_from(["on", "off", "auto"]),
    "--gpu-layers": st.one_of(st.integers(0, 200).map(str), st.sampled_from(["all", "auto"])),
    "--threads": st.integers(1, 64).map(str),
    "--model": st.sampled_from(["/m/a.gguf", "b.gguf"]),
}


@st.composite
def _argv(draw: st.DrawFn) -> list[str]:
    argv: list[str] = []
    for _ in range(draw(st.integers(0, 8))):
        key = draw(st.sampled_from(sorted(_VALUES)))
        name = draw(st.sampled_from(server_option(key).names))
        argv += [name, draw(_VALUES[key])]
        if draw(st.booleans()):
            argv.append(draw(st.sampled_from(["--kv-unified", "--no-kv-unified", "--swa-full"])))
    return argv


@settings(max_examples=300, deadline=None)
@given(_argv())
def test_every_consumer_reads_a_random_argv_alike(argv: list[str]) -> None:
    from harness.publish._facts import ModelFacts

    args = parse_server_args(argv)
    run = RunSettings.from_cmd(argv)
    facts = ModelFacts(
        architecture="llama", parameters=1, parameters_label="", bpw_label="", filetype="",
        usage="", labels={}, metadata={}, cmd=tuple(argv), size=1,
    )  # fmt: skip

    def last(key: str) -> str | None:
        found = args.last(key)
        return found.value if found is not None else None

    for key, field in (("--ctx-size", "ctx_size"), ("--batch-size", "batch_size"),
                       ("--ubatch-size", "ubatch_size"), ("--parallel", "parallel")):  # fmt: skip
        value = last(key)
        assert getattr(run, field) == (int(value) if value is not None else None)
    ctx = last("--ctx-size")
    assert facts.context_size == (int(ctx) if ctx is not None else None)
    flash = last("--flash-attn")
    assert run.flash_attn == {None: None, "auto": None, "on": True, "off": False}[flash]
    unified = args.last("--kv-unified")
    assert run.kv_unified == (None if unified is None else not unified.negative)
