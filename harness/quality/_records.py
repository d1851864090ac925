"""What a quality measurement is asked and what it found, as typed records.

The metric names are the words of llama-perplexity's ``--kl-divergence`` statistics (and, for
embedding models, of the cosine comparison); model.yaml's ``quality.thresholds`` keys, the JSON
report, the published annotations and the Action's ladder all use these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.errors import QualityError

__all__ = ["HEADLINE", "METRICS", "Metric", "QualitySettings", "QualityStats", "corpus_sentences"]

Kind = Literal["perplexity", "embedding"]


@dataclass(frozen=True)
class Metric:
    """One number a quality run measures: what it means and which way is better."""

    name: str
    kind: Kind
    better: Literal["lower", "higher"]
    unit: str  # "" or "%"
    meaning: str


def _metrics(*rows: tuple[str, Kind, Literal["lower", "higher"], str, str]) -> dict[str, Metric]:
    return {row[0]: Metric(*row) for row in rows}


METRICS: Mapping[str, Metric] = _metrics(
    ("ppl_ratio", "perplexity", "lower", "", "mean PPL(Q)/PPL(base): 1.0 is no loss"),
    ("ln_ppl_ratio", "perplexity", "lower", "", "mean ln(PPL(Q)/PPL(base))"),
    ("ppl", "perplexity", "lower", "", "the variant's perplexity on the corpus"),
    ("ppl_base", "perplexity", "lower", "", "the reference's perplexity on the corpus"),
    ("kld_mean", "perplexity", "lower", "", "mean KL divergence of the token distributions"),
    ("kld_median", "perplexity", "lower", "", "median KL divergence"),
    ("kld_p90", "perplexity", "lower", "", "90th percentile of the KL divergence"),
    ("kld_p95", "perplexity", "lower", "", "95th percentile of the KL divergence"),
    ("kld_p99", "perplexity", "lower", "", "99th percentile of the KL divergence"),
    ("kld_p99_9", "perplexity", "lower", "", "99.9th percentile of the KL divergence"),
    ("kld_max", "perplexity", "lower", "", "largest KL divergence of any token"),
    ("same_top_p", "perplexity", "higher", "%", "tokens whose most likely next token agrees"),
    ("delta_p_mean", "perplexity", "higher", "%", "mean change of the right token's probability"),
    ("delta_p_rms", "perplexity", "lower", "%", "RMS change of the right token's probability"),
    ("delta_p_p1", "perplexity", "higher", "%", "1st percentile of that change (the worst drops)"),
    ("delta_p_p99", "perplexity", "lower", "%", "99th percentile of that change"),
    ("cosine_min", "embedding", "higher", "", "least cosine of a sentence's two embeddings"),
    ("cosine_mean", "embedding", "higher", "", "mean cosine of each sentence's two embeddings"),
    (
        "rank_correlation",
        "embedding",
        "higher",
        "",
        "Spearman correlation of the pairwise sentence similarities",
    ),
)


#: What a reader compares across a ladder (annotations, the CLI's summary); reports keep them all.
HEADLINE = (
    "ppl_ratio",
    "kld_mean",
    "kld_p99",
    "same_top_p",
    "delta_p_rms",
    "cosine_min",
    "cosine_mean",
    "rank_correlation",
)


def corpus_sentences(path: Path) -> tuple[str, ...]:
    """An embedding corpus: one sentence per non-empty line of a UTF-8 text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise QualityError(f"corpus: cannot read {path}: {error}", part="corpus") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class QualitySettings:
    """How llama-perplexity reads the corpus; fixed, so that reruns give identical numbers
    (the statistics do not depend on the thread count: measured, docs/quality.md)."""

    ctx_size: int = 512  # -c: each chunk is this many tokens, its second half scored
    chunks: int | None = None  # --chunks: None, all the corpus holds
    batch_size: int | None = None  # -b: None, ctx_size (one batch per chunk)

    def argv(self) -> list[str]:
        argv = ["-c", str(self.ctx_size), "-b", str(self.batch_size or self.ctx_size)]
        return argv + (["--chunks", str(self.chunks)] if self.chunks else [])

    def key(self) -> dict[str, int | None]:
        return {"ctx_size": self.ctx_size, "chunks": self.chunks, "batch": self.batch_size}


@dataclass(frozen=True)
class QualityStats:
    """The numbers one comparison of a model with its reference printed."""

    kind: Kind
    metrics: Mapping[str, float]  # by METRICS name
    uncertainty: Mapping[str, float] = field(default_factory=dict)  # the "±" where printed
    tokens: int = 0  # tokens scored (or sentences embedded)
    reference_pass: bool = False  # whether the reference's logits were computed in this run

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "metrics": dict(self.metrics),
            "uncertainty": dict(self.uncertainty),
            "tokens": self.tokens,
            "reference_pass": self.reference_pass,
        }
