"""The estimator against llama.cpp itself, on this CPU, component by component.

Every model is loaded through llama-cpp-python with llama-server's context for the settings; the
buffer sizes llama.cpp logs are the truth. The goal is every component within 3 % and the total
never more than 1 % under; the compute graphs of the architectures modelled op by op are held
to llama.cpp's exact figure (inside the rounding of its four-decimal MiB print), so that any
drift of the model from llama.cpp shows up here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.estimate import RunSettings, compare, estimate, load_model, measure
from tests.estimate_models import (
    BERT_SETTINGS,
    BIG_NO_FA,
    DECODER_SETTINGS,
    MAMBA_SETTINGS,
    SYNTHETIC,
    minilm_gguf,
)
from tests.gguf_files import smollm2_path

pytestmark = pytest.mark.component("llama.cpp")

CASES = [
    *[(name, s) for name in ("llama-gqa", "moe", "gemma3-swa") for s in DECODER_SETTINGS],
    ("llama-gqa", BIG_NO_FA),
    ("gemma3-swa", BIG_NO_FA),
    *[(name, s) for name in ("qwen2", "qwen3") for s in DECODER_SETTINGS[:2]],
    *[("mamba", s) for s in MAMBA_SETTINGS],
    *[("smollm2", s) for s in DECODER_SETTINGS[:4]],
    *[("minilm", s) for s in BERT_SETTINGS],
]


def _case_id(case: tuple[str, dict[str, object]]) -> str:
    name, settings = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in settings.items())


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
def test_every_component_matches_llama_cpp(
    llama_cpp: None, model_paths: dict[str, Path | None], case: tuple[str, dict[str, object]]
) -> None:
    name, raw = case
    path = model_paths[name]
    if path is None:
        pytest.skip(f"{name} is not available here")
    settings = RunSettings(**raw)  # type: ignore[arg-type]
    model = load_model(path)
    est = estimate(model, settings)
    truth = measure(path, settings, model=model)
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
