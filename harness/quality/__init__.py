"""How much quantization cost a model, measured against a reference.

Language models: llama-perplexity's KL-divergence mode over a corpus (``compare_perplexity``),
the reference's logits computed once and cached. Embedding models: each sentence's embedding by
both models, through llama.cpp's own library (``compare_embeddings``). Both return
``QualityStats``, its numbers named as in ``METRICS``.
"""

from __future__ import annotations

from pathlib import Path

from ._embedding import compare_embeddings
from ._perplexity import comparable, compare_perplexity, file_digest, parse_statistics
from ._records import HEADLINE, METRICS, Metric, QualitySettings, QualityStats, corpus_sentences

__all__ = [
    "DEFAULT_CORPUS",
    "HEADLINE",
    "METRICS",
    "Metric",
    "QualitySettings",
    "QualityStats",
    "comparable",
    "compare_embeddings",
    "compare_perplexity",
    "corpus_sentences",
    "file_digest",
    "parse_statistics",
]

#: The corpus a model.yaml gets when it names none: text written for this project (Apache-2.0,
#: as the harness) and public-domain documents; docs/quality.md says what is in it.
DEFAULT_CORPUS = Path(__file__).with_name("corpus.txt")
