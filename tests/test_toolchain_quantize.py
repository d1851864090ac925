"""QUANTIZE through llama.cpp's own quantizer, in-process and through a llama-quantize binary."""

from __future__ import annotations

import ctypes
import json
import os
import re
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.toolchain import (
    GGML_TYPES,
    IN_PROCESS,
    QUANTIZE_BINARY_ENV,
    QUANTIZE_TYPES,
    ToolchainError,
    convert,
    converter_dir,
    find_programs,
    load_imatrix,
    quantize,
    quantize_command,
    quantize_options,
)
from harness.toolchain._room import model_headers, quantize_floor
from tests.models import missing_converter_modules, write_imatrix, write_tiny_llama

gguf = pytest.importorskip("gguf")

component = pytest.mark.component("llama.cpp")

# The library call unless a test says otherwise: the tests of llama-quantize itself name it.


@pytest.fixture(autouse=True)
def _in_process_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(QUANTIZE_BINARY_ENV, IN_PROCESS)


def _llama_quantize() -> Path:
    built = find_programs()
    if built is None:
        pytest.skip("llama.cpp's programs are not built (scripts/setup.sh builds them)")
    return built.path("llama-quantize")


def _binding() -> object:
    try:
        import llama_cpp.llama_cpp as binding
    except (ImportError, OSError) as error:
        pytest.skip(f"llama_cpp is not importable: {error}")
    return binding


def _reader(path: Path) -> object:
    return gguf.GGUFReader(path)


def _meta(path: Path, key: str) -> object:
    return gguf.GGUFReader(path).fields[key].contents()


def _types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def _tensor_bytes(path: Path) -> dict[str, bytes]:
    return {t.name: bytes(t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def f16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _binding()
    missing = missing_converter_modules()
    if missing:
        pytest.skip(f"llama.cpp's converter needs {', '.join(missing)}")
    try:
        converter_dir()
    except ToolchainError as error:
        pytest.skip(str(error))
    model = write_tiny_llama(tmp_path_factory.mktemp("src") / "tiny-llama")
    return convert(model, tmp_path_factory.mktemp("f16") / "tiny.F16.gguf")


@pytest.fixture(scope="module")
def matmul_columns(f16: Path) -> dict[str, int]:
    """Every matrix an imatrix covers: the 2-d weights that multiply activations."""
    tensors = gguf.GGUFReader(f16).tensors
    return {
        t.name: int(t.shape[0])
        for t in tensors
        if len(t.shape) == 2 and t.name != "token_embd.weight"
    }


# -- no llama.cpp needed ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "Q9_K"}, "unknown quantization type 'Q9_K'"),
        ({"type": "Q4_0_4_4"}, "removed from llama.cpp: use Q4_0"),
        ({"type": "Q4_K_M", "output_tensor_type": "q4_0_4_8"}, "removed from llama.cpp"),
        ({"type": "Q4_K_M", "token_embedding_type": "q7_k"}, "unknown ggml type"),
        ({"type": "Q4_K_M", "include_weights": ["attn"]}, "need imatrix"),
        ({"type": "Q4_K_M", "imatrix_label": "m.gguf"}, "need imatrix"),
        (
            {"type": "Q4_K_M", "imatrix": "x", "include_weights": ["a"], "exclude_weights": ["b"]},
            "cannot be used together",
        ),
        ({"type": "Q4_K_M", "binary": "/no/such/llama-quantize"}, "binary not found"),
    ],
)
def test_bad_flags_fail_before_anything_runs(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ToolchainError, match=message):
        quantize(tmp_path / "in.gguf", tmp_path / "out.gguf", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_type_names_are_case_insensitive_like_llama_quantize() -> None:
    options = quantize_options("q4_k_m", output_tensor_type="q6_k", token_embedding_type="Q8_0")
    assert (options.type, options.ftype) == ("Q4_K_M", 15)
    assert options.output_tensor_type == GGML_TYPES["Q6_K"] == 14
    assert options.token_embedding_type == GGML_TYPES["Q8_0"] == 8


def test_every_type_of_the_seed_is_known_or_explained() -> None:
    seed = [
        "Q4_0",
        "Q4_1",
        "Q5_0",
        "Q5_1",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ2_S",
        "IQ2_M",
        "IQ1_S",
        "IQ1_M",
        "Q2_K",
        "Q2_K_S",
        "IQ3_XXS",
        "IQ3_S",
        "IQ3_M",
        "Q3_K",
        "IQ3_XS",
        "Q3_K_S",
        "Q3_K_M",
        "Q3_K_L",
        "IQ4_NL",
        "IQ4_XS",
        "Q4_K",
        "Q4_K_S",
        "Q4_K_M",
        "Q5_K",
        "Q5_K_S",
        "Q5_K_M",
        "Q6_K",
        "Q8_0",
    ]
    assert set(seed) <= set(QUANTIZE_TYPES)
    for removed in ("Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8"):
        with pytest.raises(ToolchainError, match="use Q4_0"):
            quantize_options(removed)


def test_command_line_for_a_llama_quantize_binary() -> None:
    options = quantize_options(
        "Q5_K_M",
        imatrix="m.gguf",
        exclude_weights=["output"],
        pure=True,
        leave_output_tensor=True,
        output_tensor_type="Q8_0",
        token_embedding_type="q4_k",
        nthread=2,
    )
    command = quantize_command(Path("llama-quantize"), Path("in.gguf"), Path("out.gguf"), options)
    assert command == [
        "llama-quantize",
        "--leave-output-tensor",
        "--pure",
        "--imatrix",
        "m.gguf",
        "--exclude-weights",
        "output",
        "--output-tensor-type",
        "q8_0",
        "--token-embedding-type",
        "q4_K",
        "in.gguf",
        "out.gguf",
        "Q5_K_M",
        "2",
    ]


def _fake_quantizer(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "bin" / "llama-quantize"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\nimport json, sys\n{body}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_a_configured_binary_is_used_and_its_output_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_quantizer(tmp_path, "open(sys.argv[-2], 'w').write(json.dumps(sys.argv[1:]))")
    monkeypatch.setenv(QUANTIZE_BINARY_ENV, str(fake))
    out = quantize(tmp_path / "in.gguf", tmp_path / "out" / "q.gguf", type="q4_k_m", pure=True)
    argv = json.loads(out.read_text())
    assert argv[0] == "--pure"
    assert argv[1] == str(tmp_path / "in.gguf")
    assert Path(argv[2]).parent == out.parent and argv[2] != str(out)  # a temporary beside dest
    assert argv[3] == "Q4_K_M"
    assert sorted(p.name for p in out.parent.iterdir()) == ["q.gguf"]


def test_a_failing_binary_reports_its_reason_and_leaves_nothing(tmp_path: Path) -> None:
    fake = _fake_quantizer(
        tmp_path,
        "open(sys.argv[-2], 'w').write('partial')\n"
        "print('llama_model_quantize: failed to quantize: tensor is broken', file=sys.stderr)\n"
        "sys.exit(1)",
    )
    with pytest.raises(ToolchainError, match="failed: tensor is broken") as caught:
        quantize(tmp_path / "in.gguf", tmp_path / "out" / "q.gguf", type="Q8_0", binary=fake)
    assert "failed to quantize" in caught.value.detail
    assert list((tmp_path / "out").iterdir()) == []


def test_legacy_and_gguf_imatrix_files_load_to_the_same_values(tmp_path: Path) -> None:
    columns = {"blk.0.attn_q.weight": 256, "blk.0.ffn_down.weight": 512, "output.weight": 256}
    new = load_imatrix(write_imatrix(tmp_path / "m.gguf", columns))
    old = load_imatrix(write_imatrix(tmp_path / "m.dat", columns, legacy=True))
    assert (new.legacy, old.legacy) == (False, True)
    assert new.datasets == old.datasets == ("synthetic",)
    assert new.chunk_count == old.chunk_count == 4
    assert set(new.entries) == set(old.entries) == set(columns)
    for name, values in new.entries.items():
        assert values.dtype == np.float32 and values.size == columns[name]
        np.testing.assert_array_equal(values, old.entries[name])
    assert set(new.select(include=["attn"])) == {"blk.0.attn_q.weight"}
    assert set(new.select(exclude=["blk."])) == {"output.weight"}


def test_a_garbage_imatrix_is_a_toolchain_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x05\x00\x00\x00\xff\xff")
    with pytest.raises(ToolchainError, match="imatrix file ends"):
        load_imatrix(junk)
    with pytest.raises(ToolchainError, match="cannot read imatrix"):
        load_imatrix(tmp_path / "missing.dat")


# -- llama.cpp in-process --------------------------------------------------------------------


@component
def test_the_type_tables_match_the_loaded_library() -> None:
    binding = _binding()
    aliases = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "COPY": "F32"}
    for name, ftype in QUANTIZE_TYPES.items():
        canonical = aliases.get(name, name)
        constant = (
            "LLAMA_FTYPE_ALL_F32" if canonical == "F32" else f"LLAMA_FTYPE_MOSTLY_{canonical}"
        )
        assert getattr(binding, constant) == ftype, name
    type_name = binding._lib.ggml_type_name  # type: ignore[attr-defined]
    type_name.argtypes = [ctypes.c_int]
    type_name.restype = ctypes.c_char_p
    count = binding.GGML_TYPE_COUNT  # type: ignore[attr-defined]
    live = {i: type_name(i).decode() for i in range(count)}
    known = {name: i for i, name in live.items() if "DEPRECATED" not in name and " " not in name}
    assert {name.upper(): i for name, i in known.items()} == GGML_TYPES


@component
@pytest.mark.parametrize(
    ("qtype", "ftype", "main"), [("Q4_K_M", 15, "Q4_K"), ("Q5_K_M", 17, "Q5_K")]
)
def test_quantizes_to_k_quant_mixes(
    f16: Path, tmp_path: Path, qtype: str, ftype: int, main: str
) -> None:
    lines: list[str] = []
    out = quantize(
        f16,
        tmp_path / f"tiny.{qtype}.gguf",
        type=qtype,
        nthread=1,
        isolated=qtype == "Q5_K_M",  # both ways: in a child process and in this one
        progress=lines.append,
    )
    assert _meta(out, "general.file_type") == ftype
    types = _types(out)
    assert types["blk.0.attn_q.weight"] == main
    assert "Q6_K" in types.values()  # the _M mixes keep some tensors at 6 bits
    assert types["output_norm.weight"] == "F32"
    assert any("quant size" in line for line in lines)
    assert out.stat().st_size < f16.stat().st_size / 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@component
def test_pure_leave_output_and_explicit_tensor_types(f16: Path, tmp_path: Path) -> None:
    pure = _types(quantize(f16, tmp_path / "pure.gguf", type="Q4_K_M", pure=True, nthread=1))
    assert {t for n, t in pure.items() if not n.endswith("norm.weight")} == {"Q4_K"}

    kept = _types(
        quantize(f16, tmp_path / "keep.gguf", type="Q4_K_M", leave_output_tensor=True, nthread=1)
    )
    assert kept["output.weight"] == "F16"

    chosen = _types(
        quantize(
            f16,
            tmp_path / "chosen.gguf",
            type="Q4_K_M",
            output_tensor_type="q8_0",
            token_embedding_type="Q5_0",
            nthread=1,
        )
    )
    assert (chosen["output.weight"], chosen["token_embd.weight"]) == ("Q8_0", "Q5_0")


@component
def test_quantization_is_deterministic_across_runs_and_thread_counts(
    f16: Path, tmp_path: Path
) -> None:
    one = quantize(f16, tmp_path / "one.gguf", type="Q4_K_M", nthread=1)
    two = quantize(f16, tmp_path / "two.gguf", type="Q4_K_M", nthread=2)
    assert one.read_bytes() == two.read_bytes()


@component
def test_a_very_low_bit_type_without_imatrix_fails_cleanly(f16: Path, tmp_path: Path) -> None:
    before = _log_callback()
    with pytest.raises(ToolchainError, match="requires an imatrix") as caught:
        quantize(f16, tmp_path / "iq2.gguf", type="IQ2_XXS", nthread=1)
    assert "importance matrix" in caught.value.detail
    assert list(tmp_path.iterdir()) == []
    assert _log_callback() == before  # llama_cpp's own logger is back in place


def _log_callback() -> int | None:
    binding = _binding()
    callback = binding.llama_log_callback()  # type: ignore[attr-defined]
    data = ctypes.c_void_p()
    binding.llama_log_get(ctypes.byref(callback), ctypes.byref(data))  # type: ignore[attr-defined]
    return ctypes.cast(callback, ctypes.c_void_p).value


@component
def test_a_missing_source_reports_llama_cpps_reason(tmp_path: Path) -> None:
    _binding()
    with pytest.raises(ToolchainError, match="failed to load model from") as caught:
        quantize(tmp_path / "absent.gguf", tmp_path / "out.gguf", type="Q8_0", nthread=1)
    assert str(caught.value).startswith(str(tmp_path / "absent.gguf"))
    assert list(tmp_path.iterdir()) == []


@component
def test_imatrix_is_applied_and_recorded_like_llama_quantize_does(
    f16: Path, matmul_columns: dict[str, int], tmp_path: Path
) -> None:
    matrix = write_imatrix(tmp_path / "imatrix.gguf", matmul_columns)
    plain = quantize(f16, tmp_path / "plain.gguf", type="Q4_K_M", nthread=1)
    weighted = quantize(f16, tmp_path / "w.gguf", type="Q4_K_M", imatrix=matrix, nthread=1)
    assert _meta(weighted, "quantize.imatrix.file") == str(matrix)
    assert _meta(weighted, "quantize.imatrix.dataset") == "synthetic"
    assert _meta(weighted, "quantize.imatrix.entries_count") == len(matmul_columns)
    assert _meta(weighted, "quantize.imatrix.chunks_count") == 4
    before, after = _tensor_bytes(plain), _tensor_bytes(weighted)
    assert before["blk.0.attn_q.weight"] != after["blk.0.attn_q.weight"]
    assert before["output_norm.weight"] == after["output_norm.weight"]

    attn = quantize(
        f16, tmp_path / "a.gguf", type="Q4_K_M", imatrix=matrix, include_weights=["attn_"]
    )
    expected = sum("attn_" in name for name in matmul_columns)
    assert _meta(attn, "quantize.imatrix.entries_count") == expected
    assert _tensor_bytes(attn)["blk.0.ffn_up.weight"] == before["blk.0.ffn_up.weight"]

    no_ffn = quantize(
        f16,
        tmp_path / "n.gguf",
        type="Q4_K_M",
        imatrix=matrix,
        imatrix_label="imatrix.gguf",
        exclude_weights=["ffn_"],
    )
    assert _meta(no_ffn, "quantize.imatrix.entries_count") == expected + 1  # + output.weight
    assert _meta(no_ffn, "quantize.imatrix.file") == "imatrix.gguf"  # not the scratch path


@component
def test_a_very_low_bit_type_succeeds_with_an_imatrix(
    f16: Path, matmul_columns: dict[str, int], tmp_path: Path
) -> None:
    legacy = write_imatrix(tmp_path / "imatrix.dat", matmul_columns, legacy=True)
    out = quantize(f16, tmp_path / "iq2.gguf", type="IQ2_XXS", imatrix=legacy, nthread=1)
    assert _meta(out, "general.file_type") == 19
    assert _types(out)["blk.0.ffn_up.weight"] == "IQ2_XXS"


def _loaded_file_type(path: Path) -> int:
    """general.file_type as llama.cpp itself reads it, after loading the whole model."""
    binding = _binding()
    params = binding.llama_model_default_params()  # type: ignore[attr-defined]
    model = binding.llama_model_load_from_file(os.fsencode(path), params)  # type: ignore[attr-defined]
    assert model, f"llama.cpp cannot load {path}"
    try:
        value = ctypes.create_string_buffer(64)
        binding.llama_model_meta_val_str(model, b"general.file_type", value, 64)  # type: ignore[attr-defined]
    finally:
        binding.llama_model_free(model)  # type: ignore[attr-defined]
    return int(value.value)


@component
@pytest.mark.parametrize("qtype", list(QUANTIZE_TYPES))
def test_every_type_quantizes_to_a_file_llama_cpp_loads(
    f16: Path, matmul_columns: dict[str, int], tmp_path_factory: pytest.TempPathFactory, qtype: str
) -> None:
    # one imatrix for all: the very-low-bit types refuse to run without one
    folder = tmp_path_factory.mktemp(qtype)
    matrix = write_imatrix(folder / "imatrix.gguf", matmul_columns)
    out = quantize(f16, folder / "out.gguf", type=qtype, imatrix=matrix, nthread=2, isolated=False)
    expected = 1 if qtype == "COPY" else QUANTIZE_TYPES[qtype]  # COPY keeps the source's type
    assert _loaded_file_type(out) == expected
    # The disk check's floor never exceeds what llama.cpp really writes (no false refusal).
    floor = quantize_floor(model_headers(f16), qtype)
    assert floor <= out.stat().st_size


@component
def test_in_process_and_isolated_runs_write_the_same_bytes(f16: Path, tmp_path: Path) -> None:
    here = quantize(f16, tmp_path / "here.gguf", type="Q5_K_M", nthread=1, isolated=False)
    child = quantize(f16, tmp_path / "child.gguf", type="Q5_K_M", nthread=1)
    assert here.read_bytes() == child.read_bytes()


@component
@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q8_0", "Q2_K", "IQ4_NL", "IQ2_XS"])
def test_llama_quantize_and_the_library_write_the_same_bytes(
    f16: Path, matmul_columns: dict[str, int], tmp_path: Path, qtype: str
) -> None:
    tool = _llama_quantize()
    matrix = write_imatrix(tmp_path / "imatrix.gguf", matmul_columns)
    kwargs = {"type": qtype, "imatrix": matrix, "nthread": 1}
    program = quantize(f16, tmp_path / "program.gguf", binary=tool, **kwargs)  # type: ignore[arg-type]
    library = quantize(f16, tmp_path / "library.gguf", binary=IN_PROCESS, **kwargs)  # type: ignore[arg-type]
    assert program.read_bytes() == library.read_bytes()


@component
def test_llama_quantize_is_the_default(
    f16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _llama_quantize()
    monkeypatch.delenv(QUANTIZE_BINARY_ENV)
    lines: list[str] = []
    quantize(f16, tmp_path / "out.gguf", type="Q8_0", nthread=1, progress=lines.append)
    # llama-quantize's own banner: the library call prints no version line
    assert lines[0] == "version: 0.5.0-dev (build 11312, commit 0c1e570)", lines[:5]


@component
def test_interrupting_an_isolated_quantization_kills_it_and_leaves_nothing(
    f16: Path, tmp_path: Path
) -> None:
    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize(f16, tmp_path / "out.gguf", type="Q4_K_M", progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_a_crashing_quantizer_process_becomes_a_toolchain_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what llama.cpp's GGML_ABORT does to the process that runs it
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\necho 'GGML_ASSERT(x) failed' >&2\nkill -ABRT $$\n")
    crashing.chmod(crashing.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(crashing))
    with pytest.raises(ToolchainError, match=r"crashed \(signal 6\): GGML_ASSERT\(x\) failed"):
        quantize(tmp_path / "in.gguf", tmp_path / "out" / "q.gguf", type="Q4_K_M")
    assert list((tmp_path / "out").iterdir()) == []


@component
def test_an_isolated_run_reports_the_file_at_fault(tmp_path: Path) -> None:
    _binding()
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x00\x00\x00\x00")
    with pytest.raises(ToolchainError) as caught:
        quantize(tmp_path / "in.gguf", tmp_path / "out.gguf", type="Q4_K_M", imatrix=junk)
    assert str(caught.value) == f"{junk}: no data in imatrix file"


@component
@pytest.mark.parametrize("how", ["llama-quantize", "in-process", "isolated"])
def test_quantize_shows_the_source_bytes_done_in_ci_logs(
    f16: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    how: str,
) -> None:
    """A 40 GB QUANTIZE runs for many minutes: its progress is the source's tensor bytes done,
    one line of llama.cpp's per tensor, however llama.cpp is run."""
    from harness import _progress
    from harness.units import format_size

    monkeypatch.setenv("CI", "true")
    _progress.configure(interval=0.0, min_total=0)
    try:
        binary = _llama_quantize() if how == "llama-quantize" else None
        quantize(f16, tmp_path / "q.gguf", type="Q8_0", binary=binary, isolated=how == "isolated")
    finally:
        _progress.configure(interval=5.0, min_total=32 << 20)
    total = sum(t.n_bytes for h in model_headers(f16) for t in h.tensors)
    err = capfd.readouterr().err
    going = re.findall(
        rf"^gguf-harness: QUANTIZE Q8_0: .+ of {re.escape(format_size(total))} \(", err, re.M
    )
    done = re.findall(r"^gguf-harness: QUANTIZE Q8_0: (.+) in [\d.]+ s", err, re.M)
    assert len(going) >= 5 and done == [format_size(total)], err
