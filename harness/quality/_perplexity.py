"""llama-perplexity's KL-divergence mode, the measure the llama.cpp community quotes for quants.

Two runs: the reference reads the corpus and saves its token log-probabilities
(``--kl-divergence-base FILE``); each variant then reads that file (the corpus's tokens are in
it) and prints PPL(Q)/PPL(base), the KL divergence's mean and percentiles, "Δp" and "same top
p". The reference's file is computed once per (reference bytes, corpus bytes, settings, llama.cpp
build) and kept in the cache, so a ladder of variants costs one reference pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from harness._fs import atomic_write, cache_root, ensure_room, staged_output
from harness.errors import QualityError
from harness.gguf import GGUFFacts, read_facts
from harness.toolchain import program, run_tool

from ._records import QualitySettings, QualityStats

__all__ = ["compare_perplexity", "file_digest", "parse_statistics", "reference_logits"]

# llama-perplexity prints its statistics only from this many scored tokens (`kld.count < 100`).
MIN_SCORED = 100
_CHUNK = 1 << 20
_ERROR = re.compile(r"^[\d.]+ E (?:perplexity|kl_divergence|main)[^:]*:\s*(?P<text>.+)$")
_STAT = re.compile(
    r"^(?P<label>[^:]*[A-Za-z)][^:]*?)\s*:\s*(?P<value>-?\d+(?:\.\d+)?)\s*%?"
    r"(?:\s*±\s*(?P<unc>\d+(?:\.\d+)?)\s*%?)?\s*$"
)
_PERCENTILE = re.compile(r"^(?P<pct>\d+(?:\.\d+)?)% (?P<what>KLD|Δp)$")
_LABELS = {
    "Mean PPL(Q)": "ppl",
    "Mean PPL(base)": "ppl_base",
    "Mean ln(PPL(Q)/PPL(base))": "ln_ppl_ratio",
    "Mean PPL(Q)/PPL(base)": "ppl_ratio",
    "Mean PPL(Q)-PPL(base)": "ppl_diff",
    "Cor(ln(PPL(Q)), ln(PPL(base)))": "ppl_correlation",
    "Mean KLD": "kld_mean",
    "Maximum KLD": "kld_max",
    "Median KLD": "kld_median",
    "Minimum KLD": "kld_min",
    "Mean Δp": "delta_p_mean",
    "Maximum Δp": "delta_p_max",
    "Median Δp": "delta_p_median",
    "Minimum Δp": "delta_p_min",
    "RMS Δp": "delta_p_rms",
    "Same top p": "same_top_p",
}
_CHUNK_ROW = re.compile(r"^\s*\d+\s+-?\d+\.\d+\s+±")

Log = Callable[[str], None]


def parse_statistics(text: str) -> tuple[dict[str, float], dict[str, float], int]:
    """The statistics block of a ``--kl-divergence`` run: values and "±" by metric name, and
    the chunks it scored."""
    metrics: dict[str, float] = {}
    uncertainty: dict[str, float] = {}
    chunks = 0
    for raw in text.splitlines():
        if _CHUNK_ROW.match(raw):
            chunks += 1
            continue
        match = _STAT.match(raw.strip())
        if match is None:
            continue
        label = " ".join(match["label"].split())
        name = _LABELS.get(label) or _percentile_name(label)
        if name is None:
            continue
        metrics[name] = float(match["value"])
        if match["unc"] is not None:
            uncertainty[name] = float(match["unc"])
    return metrics, uncertainty, chunks


def _percentile_name(label: str) -> str | None:
    match = _PERCENTILE.match(label)
    if match is None:
        return None
    pct = match["pct"].removesuffix(".0").replace(".", "_")
    return f"{'kld' if match['what'] == 'KLD' else 'delta_p'}_p{pct}"


def comparable(model: GGUFFacts, reference: GGUFFacts) -> str | None:
    """Why two models' token distributions cannot be compared, or None: KL divergence needs
    one vocabulary, and a model of another architecture is not a quantization of it."""
    if model.architecture != reference.architecture:
        return (
            f"the reference is a {reference.architecture} model, this one {model.architecture}:"
            " not a quantization of it"
        )
    if (model.vocab_size, model.tokenizer_model) != (
        reference.vocab_size,
        reference.tokenizer_model,
    ):
        return (
            f"the reference's vocabulary ({reference.tokenizer_model}, {reference.vocab_size}"
            f" tokens) is not this model's ({model.tokenizer_model}, {model.vocab_size} tokens)"
        )
    return None


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered in the cache by (path, inode, size, mtime): a reference of
    tens of GB is hashed once, not once per variant."""
    stat = path.stat()
    memo = cache_root() / "quality" / "digests.json"
    key = f"{path.resolve()}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        known: dict[str, str] = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_CHUNK):
            digest.update(block)
    known = {k: v for k, v in known.items() if not k.startswith(f"{path.resolve()}:")}
    known[key] = f"sha256:{digest.hexdigest()}"
    memo.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(memo, json.dumps(known, indent=0).encode())
    return known[key]


def reference_logits(
    reference: Path, corpus: Path, settings: QualitySettings, *, log: Log | None = None
) -> tuple[Path, bool]:
    """The reference's saved log-probabilities over ``corpus`` and whether this call computed
    them (False: found in the cache)."""
    binary = program("llama-perplexity")
    key = json.dumps(
        {
            "reference": file_digest(reference),
            "corpus": file_digest(corpus),
            "settings": settings.key(),
            "llama.cpp": binary.parent.parent.name,
        },
        sort_keys=True,
    )
    target = cache_root() / "quality" / f"{hashlib.sha256(key.encode()).hexdigest()}.kld"
    if target.is_file():
        return target, False
    facts = read_facts(reference)
    # uint16 per vocabulary entry per scored token (half of each chunk); a token is at least
    # two bytes of text in any tokenizer we meet, so the corpus bounds the tokens
    tokens = settings.chunks * settings.ctx_size if settings.chunks else corpus.stat().st_size // 2
    ensure_room(target.parent, tokens * ((facts.vocab_size or 0) + 4), "reference logits")
    with staged_output(target) as staged:
        command = [str(binary), "-m", str(reference), "-f", str(corpus), *settings.argv()]
        text = _run([*command, "--kl-divergence-base", str(staged)], log)
        if not staged.is_file() or staged.stat().st_size == 0:
            raise QualityError(
                f"llama-perplexity wrote no logits for the reference: {_last_error(text)}"
            )
    return target, True


def compare_perplexity(
    model: Path,
    reference: Path,
    corpus: Path,
    settings: QualitySettings,
    *,
    log: Log | None = None,
) -> QualityStats:
    """``model`` against ``reference`` over ``corpus``: llama-perplexity's statistics."""
    problem = comparable(read_facts(model), read_facts(reference))
    if problem:
        raise QualityError(problem, part="reference")
    if not corpus.is_file():
        raise QualityError(f"corpus: no such file: {corpus}", part="corpus")
    logits, computed = reference_logits(reference, corpus, settings, log=log)
    command = [str(program("llama-perplexity")), "-m", str(model), *settings.argv()]
    text = _run([*command, "--kl-divergence-base", str(logits), "--kl-divergence"], log)
    metrics, uncertainty, chunks = parse_statistics(text)
    scored = chunks * (settings.ctx_size - 1 - settings.ctx_size // 2)
    if "kld_mean" not in metrics:
        if chunks and scored < MIN_SCORED:
            raise QualityError(
                f"{chunks} chunk(s) of {settings.ctx_size} tokens score {scored} tokens;"
                f" llama-perplexity gives statistics from {MIN_SCORED}: use a longer corpus,"
                " more chunks or a larger ctx_size",
                part="corpus",
            )
        raise QualityError(f"llama-perplexity printed no statistics: {_last_error(text)}")
    return QualityStats("perplexity", metrics, uncertainty, scored, computed)


def _run(command: list[str], log: Log | None) -> str:
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        if log is not None:
            log(line)

    # One thread per core is llama.cpp's default; the figures do not depend on it (measured).
    env = {**os.environ, "LLAMA_LOG_COLORS": "0"}
    run = run_tool(command, env=env, progress=keep)
    text = "\n".join(lines)
    errors = [m["text"] for line in lines if (m := _ERROR.match(line.strip()))]
    if run.returncode != 0 or errors:
        tokens = [e for e in errors if "tokens" in e]
        if tokens:
            raise QualityError(f"the corpus is too short: {'; '.join(tokens)}", part="corpus")
        raise QualityError(f"llama-perplexity failed: {_last_error(text)}")
    return text


def _last_error(text: str) -> str:
    for line in reversed(text.splitlines()):
        match = _ERROR.match(line.strip())
        if match:
            return match["text"]
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
