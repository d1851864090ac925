"""Quality of an embedding model's quantization: each sentence embedded by the variant and by
the reference, through llama.cpp's own library in process (the pinned build llama-server runs).

Two numbers say what a user of embeddings sees: how close each sentence's two vectors are (the
cosine, least and mean), and whether the variant still ranks sentence pairs as the reference does
(Spearman's correlation of the pairwise similarities).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import QualityError
from harness.gguf import read_facts

from ._perplexity import comparable
from ._records import QualityStats

if TYPE_CHECKING:  # numpy is imported when something is embedded: model.yaml's reader needs
    import numpy as np  # this package's records, not its arithmetic

__all__ = ["POOLING", "compare_embeddings", "spearman"]

# llama-server's --pooling words, as llama.h numbers them (-1: the model's own).
POOLING = {"": -1, "none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}


def compare_embeddings(
    model: Path,
    reference: Path,
    sentences: Sequence[str],
    *,
    pooling: str = "",
    ctx_size: int = 512,
) -> QualityStats:
    """Cosine of each sentence's embeddings by ``model`` and ``reference``, and the rank
    correlation of all pairwise similarities."""
    import numpy as np

    problem = comparable(read_facts(model), read_facts(reference))
    if problem:
        raise QualityError(problem, part="reference")
    if len(sentences) < 3:
        raise QualityError(
            f"{len(sentences)} sentence(s): a rank correlation needs at least 3", part="corpus"
        )
    ours = _embed(model, sentences, pooling, ctx_size)
    theirs = _embed(reference, sentences, pooling, ctx_size)
    cosines = np.sum(ours * theirs, axis=1)
    upper = np.triu_indices(len(sentences), k=1)
    rho = spearman((ours @ ours.T)[upper], (theirs @ theirs.T)[upper])
    metrics = {
        "cosine_min": round(float(cosines.min()), 6),
        "cosine_mean": round(float(cosines.mean()), 6),
        "rank_correlation": round(rho, 6),
    }
    return QualityStats("embedding", metrics, {}, len(sentences), True)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation, ties given their mean rank."""
    import numpy as np

    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    if not denominator:
        # one side ranks nothing (all similarities equal: a model that gives every sentence
        # the same vector): no agreement, unless the other side is as flat
        return 1.0 if not ra.any() and not rb.any() else 0.0
    return float((ra * rb).sum()) / denominator


def _ranks(values: np.ndarray) -> np.ndarray:
    import numpy as np

    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def _embed(path: Path, sentences: Sequence[str], pooling: str, ctx_size: int) -> np.ndarray:
    import numpy as np

    if pooling not in POOLING:
        raise QualityError(f"--pooling {pooling}: not one of {', '.join(POOLING)}")
    import llama_cpp

    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        llm: Any = llama_cpp.Llama(
            model_path=str(path),
            embedding=True,
            n_ctx=ctx_size,
            n_batch=ctx_size,
            n_ubatch=ctx_size,
            pooling_type=POOLING[pooling],
            # llama-server's default (-fa auto) turns flash attention on wherever the backend
            # has it, and a quantized model's vectors differ by about 1e-4 in cosine between
            # the two attention paths (measured on MiniLM Q4_0): compute what the server gives
            flash_attn=True,
            verbose=False,
        )
    try:
        vectors = np.array([llm.embed(text) for text in sentences], dtype=np.float64)
    except (RuntimeError, ValueError) as error:
        raise QualityError(f"llama.cpp could not embed with {path.name}: {error}") from None
    finally:
        llm.close()
    if vectors.ndim != 2:
        raise QualityError(f"{path.name} gives one vector per token, not per sentence: --pooling")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
