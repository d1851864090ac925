"""The quant ladder: every variant of a model measured against its quality reference, one table.

A maintainer reads it to decide which variants are worth publishing: per variant (one report
per matrix cell, read together; ``harness.action._records.load_reports``) its size, BPW, file
type, the ``quality`` figures and the verdict of its quality checks, smallest first, and a chart
of size against KL divergence. Models with the same name form one ladder; a model measured
without variants is a ladder of one rung.

The chart is Mermaid's ``xychart-beta``, the summary's chart form (harness/action/_chart.py):
GitHub strips inline SVG from summaries and comments, and xychart has no scatter plot, so the
x axis is the rungs in order of size, each labelled with its size, and the y value is drawn as
a bar with a line through the bars (the ladder's curve).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.action._records import Model, Quality, Run
from harness.units import format_size

__all__ = ["Ladder", "Rung", "ladder_markdown", "ladders", "quant_ladders"]

# The columns of each kind: metric name (harness.quality.METRICS), heading, format.
_COLUMNS = {
    "perplexity": (
        ("ppl_ratio", "PPL ratio", "{:.4f}"),
        ("kld_mean", "KLD mean", "{:.4f}"),
        ("kld_p99", "KLD p99", "{:.4f}"),
        ("same_top_p", "same top p", "{:.2f} %"),
    ),
    "embedding": (
        ("cosine_min", "cosine min", "{:.5f}"),
        ("cosine_mean", "cosine mean", "{:.5f}"),
        ("rank_correlation", "rank correlation", "{:.4f}"),
    ),
}
_VERDICT = {
    "passed": "✅ passed",
    "failed": "❌ failed",
    "expected failure": "☑️ expected failure",
    "not judged": "❔ not judged",
}
_MAX_RUNGS = 24  # more labels than this overlap on the chart's x axis


@dataclass(frozen=True)
class Rung:
    """One variant of a model on its ladder."""

    label: str  # the variant, else the file type, else the model's path
    quality: Quality
    verdict: str  # passed | failed | expected failure | not judged
    published: bool | None  # None: publishing was not asked for

    @property
    def size(self) -> int | None:
        return self.quality.size

    def figure(self) -> float | None:
        """What the chart draws: KLD mean, or 1 - cosine mean for an embedding model (both:
        lower is closer to the reference)."""
        metrics = self.quality.metrics
        if self.quality.kind == "embedding":
            cosine = metrics.get("cosine_mean")
            return None if cosine is None else 1.0 - cosine
        return metrics.get("kld_mean")


@dataclass(frozen=True)
class Ladder:
    name: str
    kind: str  # perplexity | embedding: which columns
    references: tuple[str, ...]  # usually one
    rungs: tuple[Rung, ...]  # smallest first


def ladders(run: Run) -> list[Ladder]:
    """The ladders of ``run``'s models that have quality figures, in the order first seen.
    A variant reported twice (a cell run again) keeps its last report."""
    found: dict[str, dict[str, Rung]] = {}
    for model in run.models:
        if model.quality is None:
            continue
        rung = _rung(model, model.quality)
        found.setdefault(model.name, {})[rung.label] = rung
    result = []
    for name, by_label in found.items():
        rungs = sorted(by_label.values(), key=_order)
        embedding = all(rung.quality.kind == "embedding" for rung in rungs)
        references = dict.fromkeys(r.quality.reference for r in rungs if r.quality.reference)
        kind = "embedding" if embedding else "perplexity"
        result.append(Ladder(name, kind, tuple(references), tuple(rungs)))
    return result


def _order(rung: Rung) -> tuple[bool, int, str]:
    return (rung.size is None, rung.size or 0, rung.label)


def _rung(model: Model, quality: Quality) -> Rung:
    label = quality.variant or quality.file_type or model.path or model.name
    outcomes = {item.outcome for item in model.section("quality")}
    if outcomes & {"failed", "error"}:
        verdict = "failed"
    elif outcomes & {"xfailed", "skipped"}:
        verdict = "expected failure"  # an xfail: a variant model.yaml says must fail
    elif outcomes == {"passed"}:
        verdict = "passed"
    else:
        verdict = "not judged"
    return Rung(label, quality, verdict, model.published)


def quant_ladders(run: Run, room: int) -> str:
    """Every ladder of ``run`` in at most ``room`` UTF-8 bytes: with charts, else without
    (the compact form), else "" (the models' own sections still carry their figures)."""
    found = ladders(run)
    for compact in (False, True):
        text = "".join(ladder_markdown(ladder, compact=compact) for ladder in found)
        if len(text.encode("utf-8")) <= room:
            return text
    return ""


def ladder_markdown(ladder: Ladder, *, compact: bool = False) -> str:
    """The ladder's table (and, unless ``compact``, its chart) as a Markdown section."""
    columns = _COLUMNS[ladder.kind]
    lines = ["", f"### Quant ladder: {_cell(ladder.name)}", ""]
    if ladder.references:
        against = ", ".join(f"`{_code(ref)}`" for ref in ladder.references)
        lines += [f"Against {against}; smallest first.", ""]
    heads = ["variant", "size", "BPW", "file type", *(c[1] for c in columns), "quality"]
    heads.append("published")
    lines.append("| " + " | ".join(heads) + " |")
    lines.append("|---|--:|--:|---|" + "--:|" * len(columns) + "---|---|")
    for rung in ladder.rungs:
        q = rung.quality
        cells = [
            _cell(rung.label),
            format_size(q.size) if q.size is not None else "—",
            f"{q.bpw:.2f}" if q.bpw is not None else "—",
            _cell(q.file_type) or "—",
            *(_metric(q, name, form) for name, _, form in columns),
            _VERDICT[rung.verdict],
            {True: "📦 yes", False: "no", None: "—"}[rung.published],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    chart = "" if compact else ladder_chart(ladder)
    if chart:
        lines += ["", chart]
    return "\n".join(lines) + "\n"


def ladder_chart(ladder: Ladder) -> str:
    """A fenced ``mermaid`` block of size against KLD mean (embedding: 1 - cosine mean), or ""
    when no rung has the figure."""
    shown = [rung for rung in ladder.rungs if rung.figure() is not None][:_MAX_RUNGS]
    if not shown:
        return ""
    values = [rung.figure() or 0.0 for rung in shown]
    what = "1 - cosine mean" if ladder.kind == "embedding" else "KLD mean"
    sizes = [format_size(rung.size) if rung.size is not None else "?" for rung in shown]
    labels = ", ".join(_quote(f"{r.label} {s}") for r, s in zip(shown, sizes, strict=True))
    data = ", ".join(_number(value) for value in values)
    top = max(values) * 1.1 or 1.0
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f"    title {_quote(f'{ladder.name}: size vs {what}')}",
            f"    x-axis [{labels}]",
            f"    y-axis {_quote(what)} 0 --> {_number(top)}",
            f"    bar [{data}]",
            f"    line [{data}]",
            "```",
        ]
    )


def _metric(quality: Quality, name: str, form: str) -> str:
    value = quality.metrics.get(name)
    return "—" if value is None else form.format(value)


def _number(value: float) -> str:
    # Four significant digits (a Q8_0's KLD mean is 0.0005, a Q2_K's 0.6), written without an
    # exponent, which Mermaid's grammar does not read.
    return f"{float(f'{value:.4g}'):.10f}".rstrip("0").rstrip(".") or "0"


def _quote(text: str) -> str:
    # Mermaid strings end at a double quote and have no escape for it.
    return '"' + text.replace('"', "'") + '"'


def _cell(text: str) -> str:
    text = text if len(text) <= 80 else text[:79] + "…"
    return " ".join(text.replace("|", "\\|").replace("<", "&lt;").splitlines())


def _code(text: str) -> str:
    return _cell(text).replace("`", "'")
