"""The one-pass rule (tests/test_build_once.py) for a model made in a stage outside the image.

A model repository's usual shape (models/minilm/GGUFPackerfile): a side stage converts or
quantizes, and the image copies (or quantizes) what it made. The side stage's output is kept
unhashed under its step-cache key, and the image's layer pass hashes it: one read (it was two,
hashed into the store for the step cache, then written into the layer). The step cache still
holds it: a rerun reads nothing, and a build that fails after the QUANTIZE keeps it.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

import harness.builder._steps as steps_module
from harness.builder import BuildOptions, build
from harness.errors import BuildError
from harness.oci import read_layout
from tests.test_build_once import reads as reads  # the fixtures, by name
from tests.test_build_once_steps import CMD, SLACK
from tests.test_build_once_steps import counted as counted
from tests.test_build_once_steps import f16 as f16

SIDE = "FROM scratch AS f16\nCOPY f16.gguf /\nQUANTIZE --type=Q8_0 /f16.gguf /out.gguf\n"
IMAGE = f"FROM scratch\nCOPY --from=f16 --chmod=600 /out.gguf /models/model.gguf\n{CMD}"


def _context(tmp_path: Path, f16: Path, packerfile: str) -> Path:
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    if not (context / "f16.gguf").exists():
        os.link(f16, context / "f16.gguf")  # the same inode: its reads are counted
    (context / "GGUFPackerfile").write_text(packerfile)
    return context


def _build(context: Path, out: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(cache))
    built = build(BuildOptions(context=context, output=out))
    return built.files["/models/model.gguf"]


def _no_quantize(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("QUANTIZE ran: the step cache lost it")


@pytest.mark.component("llama.cpp")
def test_a_side_stage_quantize_is_read_once_into_the_image(
    f16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: Counter[int]
) -> None:
    context = _context(tmp_path, f16, SIDE + IMAGE)
    cache = tmp_path / "cache"
    quantized = _build(context, tmp_path / "out", monkeypatch, cache)
    size = quantized.stat().st_size
    assert counted[quantized.stat().st_ino] <= size + SLACK, counted
    # The F16 input: hashed once, for QUANTIZE's cache key (llama.cpp's own read not counted).
    assert counted[f16.stat().st_ino] <= f16.stat().st_size + SLACK, counted
    # The layer is what COPY makes of the same file.
    image = read_layout(tmp_path / "out")
    shutil.copyfile(quantized, context / "model.gguf")
    (context / "GGUFPackerfile").write_text(
        f"FROM scratch\nCOPY --chmod=600 model.gguf /models/\n{CMD}"
    )
    _build(context, tmp_path / "copy", monkeypatch, tmp_path / "cache-copy")
    assert image.diff_ids == read_layout(tmp_path / "copy").diff_ids
    # A rerun runs no QUANTIZE and reads nothing but headers; the kept output is the store's
    # blob by then, under no second name.
    monkeypatch.setattr(steps_module, "quantize", _no_quantize)
    (context / "GGUFPackerfile").write_text(SIDE + IMAGE)
    for again in ("again", "again2"):
        counted.clear()
        _build(context, tmp_path / again, monkeypatch, cache)
        assert sum(counted.values()) < SLACK, counted
        assert read_layout(tmp_path / again).descriptor == image.descriptor
    assert not list((cache / "build" / "outputs").iterdir())


# The next build takes the kept output from the step cache, copied from the side stage or
# made by the same QUANTIZE in the image's stage (whose layer pass then hashes it).
NEXT = {
    "copied": SIDE + IMAGE,
    "in-image": "FROM scratch AS f16\nCOPY f16.gguf /\n"
    "FROM scratch\nQUANTIZE --from=f16 --type=Q8_0 /f16.gguf /models/model.gguf\n" + CMD,
}


@pytest.mark.component("llama.cpp")
@pytest.mark.parametrize("next_build", sorted(NEXT))
def test_a_build_that_fails_after_a_side_quantize_keeps_it(
    next_build: str,
    f16: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    counted: Counter[int],
) -> None:
    """The image's stage fails before it copies the output: the QUANTIZE is in the step cache,
    still unhashed, and the next build's layer pass reads it once."""
    failing = SIDE + "FROM scratch\nCOPY missing.gguf /\n" + IMAGE.split("\n", 1)[1]
    context = _context(tmp_path, f16, failing)
    cache = tmp_path / "cache"
    with pytest.raises(BuildError, match=r"missing\.gguf"):
        _build(context, tmp_path / "failed", monkeypatch, cache)
    monkeypatch.setattr(steps_module, "quantize", _no_quantize)
    (context / "GGUFPackerfile").write_text(NEXT[next_build])
    counted.clear()
    quantized = _build(context, tmp_path / "out", monkeypatch, cache)
    assert counted[quantized.stat().st_ino] <= quantized.stat().st_size + SLACK, counted
    assert sum(counted.values()) <= quantized.stat().st_size + SLACK, counted


@pytest.mark.component("llama.cpp")
def test_a_quantize_of_a_side_output_hashes_it_once(
    f16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: Counter[int]
) -> None:
    """A step that needs the side output's digest (a QUANTIZE of it, for its cache key) hashes
    it once; the image's layer holds the new output, read once too."""
    packerfile = SIDE + (
        "FROM scratch\nQUANTIZE --from=f16 --allow-requantize --type=Q4_0 /out.gguf"
        f" /models/model.gguf\n{CMD}"
    )
    context = _context(tmp_path, f16, packerfile)
    cache = tmp_path / "cache"
    quantized = _build(context, tmp_path / "out", monkeypatch, cache)
    (kept,) = (cache / "build" / "outputs").iterdir()
    assert counted[kept.stat().st_ino] <= kept.stat().st_size + SLACK, counted
    assert counted[quantized.stat().st_ino] <= quantized.stat().st_size + SLACK, counted
    monkeypatch.setattr(steps_module, "quantize", _no_quantize)
    counted.clear()
    _build(context, tmp_path / "again", monkeypatch, cache)
    assert sum(counted.values()) < SLACK, counted
    assert read_layout(tmp_path / "again").descriptor == read_layout(tmp_path / "out").descriptor
