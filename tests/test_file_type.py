"""One file type everywhere: facts, the seed's entry and label, inspect, publish and model.yaml.

The seed's gguf-parser and our facts once guessed a K-quant mix differently (Q4_K_S in the
image, Q4_K_M in ``inspect FILE``). Every surface must now show harness.gguf's answer, which is
llama.cpp's own: the llama.cpp test at the end checks that against the library itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from harness.builder import BuildOptions, build
from harness.expect import Subject, evaluate, load_spec
from harness.gguf import (
    FileType,
    file_type,
    file_type_name,
    model_file_type,
    read_facts,
    read_header,
)
from harness.oci import parse_seed_config, read_layout
from harness.publish import model_facts
from harness.store import Store
from tests.test_gguf_llama import _llama_cpp, _load_log, _print_info

N_EMBD = 256  # a whole K-quant block per row
LAYERS = range(2)
NORMS = [f"blk.{i}.{n}.weight" for i in LAYERS for n in ("attn_norm", "ffn_norm")]
OUTER_Q8 = [("output.weight", T.Q8_0), ("token_embd.weight", T.Q8_0)]  # last in the file


def _k_quant_mix() -> list[tuple[str, T]]:
    """A Q4_K_S-style mix: Q4_K weights, Q5_K attn_v, Q6_K output, F32 norms."""
    tensors = [("token_embd.weight", T.Q4_K), ("output_norm.weight", T.F32)]
    tensors += [("output.weight", T.Q6_K), *((name, T.F32) for name in NORMS)]
    for i in LAYERS:
        tensors += [(f"blk.{i}.{n}.weight", T.Q4_K) for n in ("attn_q", "attn_k", "ffn_up")]
        tensors += [(f"blk.{i}.attn_output.weight", T.Q4_K), (f"blk.{i}.attn_v.weight", T.Q5_K)]
    return tensors


# name: (tensors in file order, general.file_type, what every surface must show, llama.cpp says)
CASES: dict[str, tuple[list[tuple[str, T]], int | None, str, str]] = {
    # (a) stated: the number wins, whatever the tensors look like.
    "stated": (_k_quant_mix(), 14, "Q4_K_S", "Q4_K - Small"),
    # (b) not stated, a K-quant mix: the most common type is Q4_K, which llama.cpp calls the
    # medium mix; gguf-parser's mix-aware rule (runner-up types, blk.* only) says Q4_K_S.
    "k-quant mix": (_k_quant_mix(), None, "Q4_K_M", "(guessed) Q4_K - Medium"),
    # Two Q8_0 and two F32: a tie that llama.cpp's loader order breaks (tensors outside blk.N.
    # first), not the file order or the lower type id (both would pick F32).
    "tie": (
        [*((n, T.F32) for n in NORMS[:2]), *OUTER_Q8],
        None,
        "Q8_0",
        "(guessed) Q8_0",
    ),
    # 1-D tensors count as much as weights: three F32 norms outvote two Q8_0 weights.
    "norms count": (
        [*((n, T.F32) for n in NORMS[:3]), *OUTER_Q8],
        None,
        "F32",
        "(guessed) all F32",
    ),
}


def _tensor(name: str, qtype: T) -> np.ndarray:
    rows = 1 if name.endswith("norm.weight") else 8
    if qtype is T.F32:
        return np.ones(N_EMBD, np.float32) if rows == 1 else np.ones((rows, N_EMBD), np.float32)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return np.zeros((rows, N_EMBD // block * type_size), np.uint8)


def _write(path: Path, tensors: Sequence[tuple[str, T]], ftype: int | None) -> Path:
    """A llama-like GGUF that llama.cpp loads as far as printing its figures."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("File Type Test")
    writer.add_context_length(256)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(len(LAYERS))
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    if ftype is not None:
        writer.add_file_type(ftype)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(61)])
    writer.add_token_types([1] * 64)
    writer.add_token_merges([f"t {i}" for i in range(32)])
    for name, qtype in tensors:
        writer.add_tensor(name, _tensor(name, qtype), raw_dtype=None if qtype is T.F32 else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_every_surface_shows_the_same_file_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    tensors, ftype, expected, _ = CASES[case]
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    context = tmp_path / "context"
    context.mkdir()
    model = _write(context / "model.gguf", tensors, ftype)
    (context / "GGUFPackerfile").write_text(
        'FROM scratch\nCOPY model.gguf /models/\nCMD ["-m", "/models/model.gguf"]\n'
    )
    layout = build(BuildOptions(context=context, output=tmp_path / "layout", tag="v1")).output
    image = read_layout(layout)
    seed = parse_seed_config(image.config)
    store = Store(tmp_path / "store")
    store.add_layout(layout, "127.0.0.1:1/mix:v1")
    facts = read_facts(model)
    spec = tmp_path / "model.yaml"
    spec.write_text(
        f"schemaVersion: 1\nexpect:\n  file_type: {expected}\n"
        f"  labels:\n    gguf.model.filetype: {expected}\n"
    )
    checks = [evaluate(c, Subject(facts, image.labels)) for c in load_spec(spec).checks]

    shown = {
        "harness.gguf facts": facts.file_type,
        "seed entry FileType": file_type(seed.model.file_type, ()).name,
        "seed entry, read back": seed.model.derived_file_type.name,
        "label gguf.model.filetype": image.labels["gguf.model.filetype"],
        "inspect REF (Store.summary)": store.summary("127.0.0.1:1/mix:v1").row.type,
        "publish facts": model_facts(image).filetype,
    }
    assert shown == dict.fromkeys(shown, expected)
    assert facts.file_type_inferred == (ftype is None)
    assert [(c.check.name, c.passed) for c in checks] == [
        ("file_type", True),
        ("labels::gguf.model.filetype", True),
    ]


@pytest.mark.component("llama.cpp")
@pytest.mark.parametrize("case", list(CASES))
def test_the_rule_is_llama_cpps(tmp_path: Path, case: str) -> None:
    tensors, ftype, _, printed = CASES[case]
    path = _write(tmp_path / "model.gguf", tensors, ftype)
    info = _print_info(_load_log(_llama_cpp(), str(path)))
    assert info["file type"] == printed
    assert model_file_type([read_header(path)]).llama_name == printed


MIX = [(name, int(qtype)) for name, qtype in _k_quant_mix()]
GUESS = FileType(int(gguf.LlamaFileType.MOSTLY_Q4_K_M), True)


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (14, FileType(14, False)),
        (0, FileType(0, False)),
        (1024 | 14, FileType(14, True)),  # llama.cpp's own "guessed" mark: "(guessed) Q4_K - Small"
        (99, FileType(99, False)),  # stated, so not guessed: llama.cpp too says "unknown"
        (None, GUESS),
        (-1, GUESS),  # no uint32: as good as absent
        (2**32, GUESS),
        (True, GUESS),
        ("14", GUESS),
        (14.0, GUESS),
    ],
)
def test_stated_or_guessed(declared: object, expected: FileType) -> None:
    assert file_type(declared, MIX) == expected


def test_names() -> None:
    # The short names are the ones llama-quantize takes and gguf-py spells, number for number.
    for ftype in gguf.LlamaFileType:
        if ftype is not gguf.LlamaFileType.GUESSED:
            assert file_type_name(ftype) == ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    assert [file_type_name(n) for n in (4, 5, 6, 33, 99)] == ["Unknown"] * 5
    assert FileType(99, False).llama_name == "unknown, may not work"
    assert FileType(0, True).llama_name == "(guessed) all F32"
    # No tensors at all: the loader's starting point, F32.
    assert file_type(None, ()) == FileType(0, True)
