"""Estimate versus budget at a glance: a Mermaid bar chart and a table of text bars.

GitHub renders Mermaid in job summaries, PR comments and release notes, but strips inline SVG
and data: images, so the chart is Mermaid's ``xychart-beta``: the budget drawn as a bar with the
estimate drawn over it, one pair per budget and device. The table under it repeats the numbers
with a bar of block characters, which reads the same where Mermaid does not render (email
notifications, older GitHub Enterprise servers, the raw Markdown).
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.action._memory import Bar
from harness.units import format_size

__all__ = ["mermaid_chart", "text_bar", "usage_table"]

_WIDTH = 20  # characters of a full text bar
_MAX_BARS = 24  # more labels than this overlap on the x axis
_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def mermaid_chart(bars: Sequence[Bar], title: str = "Memory: estimate vs budget") -> str:
    """A fenced ``mermaid`` block, or "" when there is nothing to draw."""
    shown = [bar for bar in bars if bar.estimate > 0 or bar.budget][:_MAX_BARS]
    if not shown:
        return ""
    top = max(max(bar.estimate, bar.budget or 0) for bar in shown)
    unit, scale = next(((u, s) for u, s in _UNITS if top >= s), ("B", 1))
    labels = ", ".join(_quote(bar.label) for bar in shown)
    budgets = ", ".join(_number((bar.budget or 0) / scale) for bar in shown)
    estimates = ", ".join(_number(bar.estimate / scale) for bar in shown)
    lines = [
        "```mermaid",
        "xychart-beta",
        f"    title {_quote(title + ' (' + unit + ')')}",
        f"    x-axis [{labels}]",
        f'    y-axis "{unit}" 0 --> {_number(top / scale * 1.1)}',
    ]
    if any(bar.budget for bar in shown):
        lines.append(f"    bar [{budgets}]")
    lines += [f"    bar [{estimates}]", "```"]
    return "\n".join(lines)


def usage_table(bars: Sequence[Bar]) -> str:
    """A Markdown table: budget, device, estimate, budget, a text bar and the share used."""
    if not bars:
        return ""
    rows = ["| budget | device | estimate | budget | use |", "|---|---|--:|--:|---|"]
    for bar in bars:
        share = bar.share
        use = "" if share is None else f"`{text_bar(share)}` {share:.0%}"
        mark = "" if bar.passed else " ❌"
        rows.append(
            f"| {bar.budget_name}{mark} | {bar.device or '-'} | {format_size(bar.estimate)} "
            f"| {format_size(bar.budget) if bar.budget else '-'} | {use} |"
        )
    return "\n".join(rows)


def text_bar(share: float, width: int = _WIDTH) -> str:
    """``█████░░░░░`` filled to ``share`` of ``width``; past 100 % the overflow shows as ``▓``."""
    filled = round(min(share, 1.0) * width)
    bar = "█" * filled + "░" * (width - filled)
    if share > 1.0:
        bar += "▓" * min(width, max(1, round((share - 1.0) * width)))
    return bar


def _quote(text: str) -> str:
    # Mermaid strings end at a double quote and have no escape for it.
    return '"' + text.replace('"', "'") + '"'


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"
