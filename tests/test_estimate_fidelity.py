"""The estimator against llama-server itself, on this CPU, component by component.

Every case is a llama-server command line as people type it; llama-server (the toolchain's build)
loads the model with exactly that argv and prints its buffers, defaults included (flash attention
auto, automatic slots with a unified KV cache, weight repacking). The estimate reads the same argv
through the one model of llama-server's arguments. The goal is every component within 3 % and the
total never more than 1 % under; the compute graphs of the architectures modelled op by op are
held to llama.cpp's exact figure (inside the rounding of its print), so that any drift of the
model from llama.cpp shows up here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.estimate import RunSettings, compare, estimate, load_model, measure, measure_server
from harness.toolchain import find_programs
from tests.estimate_models import SYNTHETIC, minilm_gguf
from tests.gguf_files import smollm2_path

pytestmark = pytest.mark.component("llama.cpp")

DECODER = (
    ["-c", "8192"],  # llama-server's own defaults: -fa auto, -np auto (4 slots, unified KV)
    ["-c", "512", "-np", "1", "-fa", "off"],
    ["-c", "4096", "-fa", "on"],
    ["-c", "4096", "-np", "4"],  # explicit slots: one KV stream each
    ["-c", "4096", "-np", "4", "--kv-unified"],
    ["-c", "8192", "-np", "2", "-no-kvu", "-fa", "off"],
    ["-c", "2048", "-fa", "off", "-ctk", "q8_0"],
    ["-c", "16384", "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0"],
    ["-c", "4096", "-ctk", "q4_0", "-ctv", "q4_0"],
    ["-c", "32768", "-fa", "on", "-lm", "none"],
)
CASES: list[tuple[str, list[str]]] = [
    *[(name, argv) for name in ("llama-gqa", "moe", "gemma3-swa") for argv in DECODER],
    ("llama-gqa", ["-c", "32768", "-np", "1", "-fa", "off"]),
    ("gemma3-swa", ["-c", "32768", "-np", "1", "-fa", "off"]),
    ("gemma3-swa", ["-c", "8192", "--swa-full"]),
    *[(name, argv) for name in ("qwen2", "qwen3") for argv in DECODER[:3]],
    ("mamba", ["-c", "512", "-np", "1"]),
    ("mamba", ["-c", "32768"]),
    ("mamba", ["-c", "4096", "-np", "3", "-no-kvu", "-ub", "256"]),
    *[("smollm2", argv) for argv in DECODER[:5]],
    # weights llama-server repacks on this CPU (CPU_REPACK), and the same without
    ("llama-q4_0", ["-c", "4096"]),
    ("llama-q4_0", ["-c", "4096", "--no-repack"]),
    ("moe-q4_0", ["-c", "4096"]),
    ("moe-q4_0", ["-c", "4096", "-lm", "none"]),
    ("minilm", ["--embedding"]),
    ("minilm", ["--embedding", "-fa", "off", "-np", "1"]),
    ("minilm", ["--embedding", "--pooling", "cls", "-ub", "256", "-fa", "off"]),
]


def _case_id(case: tuple[str, list[str]]) -> str:
    name, argv = case
    return name + " " + " ".join(argv)


@pytest.fixture(scope="session")
def llama_server() -> None:
    if find_programs() is None:
        pytest.skip("llama.cpp's programs are not built (scripts/setup.sh builds them)")


@pytest.fixture(scope="session")
def llama_cpp() -> None:
    try:
        import llama_cpp.llama_cpp  # noqa: F401
    except (ImportError, OSError) as error:
        pytest.skip(f"llama-cpp-python is not usable: {error}")


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | None]:
    root = tmp_path_factory.mktemp("estimate-models")
    paths: dict[str, Path | None] = {
        name: write(root / f"{name}.gguf") for name, write in SYNTHETIC.items()
    }
    paths["smollm2"] = smollm2_path()
    paths["minilm"] = minilm_gguf(root)  # converted once per session
    return paths


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_every_component_matches_llama_server(
    llama_server: None, model_paths: dict[str, Path | None], case: tuple[str, list[str]]
) -> None:
    name, argv = case
    path = model_paths[name]
    if path is None:
        pytest.skip(f"{name} is not available here")
    model = load_model(path)
    est = estimate(model, RunSettings.from_cmd(argv))  # no GPUs: this machine
    truth = measure_server(path, argv)
    rows = {row.component: row for row in compare(est, truth)}
    for row in rows.values():
        assert abs(row.error_pct) <= 3.0, f"{row.component}: {row}"
    assert rows["total"].error_pct >= -1.0
    assert est.exact
    assert rows["compute"].error == 0, rows["compute"]
    assert rows["kv_cache"].error == 0, rows["kv_cache"]
    assert rows["output"].error == 0, rows["output"]


def test_context_and_batch_are_the_ones_llama_cpp_uses(
    llama_cpp: None, model_paths: dict[str, Path | None]
) -> None:
    path = model_paths["llama-gqa"]
    assert path is not None
    model = load_model(path)
    settings = RunSettings(ctx_size=1000, parallel=3, kv_unified=False, batch_size=700)
    est = estimate(model, settings)
    log = "\n".join(measure(path, settings, model=model).log)
    assert f"n_ctx                 = {est.context_size}" in log
    assert f"n_ctx_seq             = {est.context_per_seq}" in log
    assert f"n_batch               = {est.batch_size}" in log
    assert f"n_ubatch              = {est.ubatch_size}" in log


def test_the_log_callback_is_restored(llama_cpp: None, model_paths: dict[str, Path | None]) -> None:
    import ctypes

    import llama_cpp.llama_cpp as binding

    def current() -> int | None:
        callback = binding.llama_log_callback()
        data = ctypes.c_void_p()
        binding.llama_log_get(ctypes.byref(callback), ctypes.byref(data))
        return ctypes.cast(callback, ctypes.c_void_p).value

    path = model_paths["mamba"]
    assert path is not None
    before = current()
    measure(path, RunSettings(ctx_size=256, parallel=1))
    assert current() == before
