"""``gguf-harness quality MODEL --reference R``: one model measured against another by hand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.errors import UsageError
from harness.pipeline import resolve_artifact
from harness.quality import (
    DEFAULT_CORPUS,
    HEADLINE,
    METRICS,
    QualitySettings,
    compare_embeddings,
    compare_perplexity,
    corpus_sentences,
)

__all__ = ["quality_command"]

_SHOWN = ("ppl", "ppl_base", *HEADLINE, "kld_max")


def quality_command(args: argparse.Namespace) -> int:
    model = resolve_artifact(args.model).model
    reference = resolve_artifact(args.reference).model
    corpus = Path(args.corpus) if args.corpus else DEFAULT_CORPUS
    if not corpus.is_file():
        raise UsageError(f"--corpus: no such file: {corpus}")
    if args.kind == "embedding":
        sentences = corpus_sentences(corpus)
        stats = compare_embeddings(model, reference, sentences, ctx_size=args.ctx_size)
    else:
        settings = QualitySettings(ctx_size=args.ctx_size, chunks=args.chunks)
        stats = compare_perplexity(model, reference, corpus, settings)
    if args.json:
        print(json.dumps({"model": str(model), "reference": str(reference), **stats.to_json()}))
        return 0
    print(f"{model.name} against {reference.name} ({stats.tokens} {_unit(stats.kind)})")
    for name in _SHOWN:
        if name in stats.metrics:
            unc = stats.uncertainty.get(name)
            spread = f" ± {unc:g}" if unc is not None else ""
            unit = METRICS[name].unit if name in METRICS else ""
            print(f"  {name:<17} {stats.metrics[name]:g}{unit}{spread}{unit}")
    return 0


def _unit(kind: str) -> str:
    return "tokens scored" if kind == "perplexity" else "sentences"
