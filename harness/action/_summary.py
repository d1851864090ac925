"""The report as Markdown for people: the job summary, the PR comment, the release notes.

Per model: what failed (expected, measured, the YAML line), the memory estimate against each
budget as a chart, the smoke answers, the image digests, and the checks that passed folded
away. GitHub caps a step summary at 1 MiB and a comment or check-run text at 65,536
characters, so the text is built to a byte limit: models that do not fit whole are shown in a
compact form (failures only), and what still does not fit is left out with a note saying so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness.action._chart import mermaid_chart, usage_table
from harness.action._ladder import quant_ladders
from harness.action._memory import memory_bars
from harness.action._records import Diff, Item, Model, Run, parse_report
from harness.units import format_size

__all__ = ["COMMENT_LIMIT", "SUMMARY_LIMIT", "summary_markdown"]

SUMMARY_LIMIT = 1024 * 1024 - 1024  # GitHub's step summary limit, less room for a footer
COMMENT_LIMIT = 65_536 - 1024  # issue comments, check run summaries
_CELL = 160  # characters of a value in a table cell
_ANSWER = 400  # characters of a smoke answer
_COMPACT_FAILURES = 20
_DIFF_ROWS = 12  # shown before the rest of the changes is folded away (compact: 5, no fold)
_ICON = {"passed": "✅", "failed": "❌", "error": "💥", "skipped": "⏭️", "xfailed": "🔸"}


def summary_markdown(
    report: Run | Mapping[str, Any],
    *,
    limit: int = SUMMARY_LIMIT,
    title: str = "gguf-harness",
    footer: str = "",
) -> str:
    """Markdown for ``report`` (a Run or the report's JSON), at most ``limit`` UTF-8 bytes."""
    run = report if isinstance(report, Run) else parse_report(report)
    # The most severe first: what a reader opens the summary for (see _severity).
    models = sorted(run.models, key=_severity)
    failing = [m for m in models if not m.passed]
    passing = [m for m in models if m.passed]
    head = _header(run, title, failing + passing, limit // 4)
    tail = f"\n{footer}\n" if footer else ""
    budget = limit - _size(head) - _size(tail) - _NOTE_ROOM
    parts: list[str] = []
    # each model's variants side by side, before the details (it shrinks to fit the room)
    ladders = quant_ladders(run, budget)
    parts.append(ladders)
    budget -= _size(ladders)
    left_out: list[Model] = []
    budget = _render(failing, parts, left_out, budget)
    if passing:
        # Passed models folded away together, after every failure.
        opening = f"\n<details><summary>✅ {len(passing)} passed</summary>\n"
        closing = "\n</details>\n"
        room = _size(opening) + _size(closing)
        if budget > room:
            inner: list[str] = []
            _render(passing, inner, left_out, budget - room)
            if inner:
                parts += [opening, *inner, closing]
        else:
            left_out += passing
    if left_out:
        bad = sum(not m.passed for m in left_out)
        parts.append(
            f"\n> [!WARNING]\n> {len(left_out)} model(s) left out to stay under GitHub's size "
            f"limit ({bad} failed, {len(left_out) - bad} passed): "
            f"{_clip(', '.join(m.name for m in left_out), 300)}. The JSON report has every check.\n"
        )
    text = head + "".join(parts) + tail
    return _cut(text, limit)


_NOTE_ROOM = 512


def _severity(model: Model) -> tuple[int, int]:
    """A model that could not be built or checked (an item in error), then one with failed
    checks (budgets, expectations, smoke), then a passed one; more failures first within each."""
    errors, failures = model.count("error"), model.count("failed")
    tier = 0 if errors else 1 if failures or not model.passed else 2
    return (tier, -(errors + failures))


def _render(models: list[Model], parts: list[str], left_out: list[Model], budget: int) -> int:
    """Each model in full, else compact, else its heading and counts alone, else left out;
    returns the budget left."""
    for model in models:
        for render in (_model_full, _model_compact, _model_brief):
            text = render(model)
            if _size(text) <= budget:
                parts.append(text)
                budget -= _size(text)
                break
        else:
            left_out.append(model)
    return budget


def _header(run: Run, title: str, models: list[Model], limit: int) -> str:
    total = len(run.models)
    failed = len(run.failed_models)
    if not total:
        verdict = "❌ no model was checked"
    elif failed:
        verdict = f"❌ {failed} of {total} model{'s' if total != 1 else ''} failed"
    else:
        verdict = f"✅ {'all ' if total > 1 else ''}{total} model{'s' if total != 1 else ''} passed"
    lines = [f"## {title}: {verdict}", ""]
    if models:
        lines += [
            "| model | result | checks | failed | errors | skipped |",
            "|---|---|--:|--:|--:|--:|",
        ]
        used = sum(_size(line) + 1 for line in lines)
        for shown, model in enumerate(models):
            row = (
                f"| {_cell(model.name)} | {'✅' if model.passed else '❌'} | {len(model.items)} "
                f"| {model.count('failed')} | {model.count('error')} | {model.count('skipped')} |"
            )
            if used + _size(row) + 1 > limit - 200:  # room for the line saying what is not
                rest = models[shown:]
                bad = sum(not m.passed for m in rest)
                lines.append(f"| …{len(rest)} more ({bad} failed) | | | | | |")
                break
            lines.append(row)
            used += _size(row) + 1
    return "\n".join(lines) + "\n"


def _model_full(model: Model) -> str:
    return _model(model, compact=False)


def _model_compact(model: Model) -> str:
    return _model(model, compact=True)


def _model_brief(model: Model) -> str:
    icon = "✅" if model.passed else "❌"
    return f"\n### {icon} {model.name}\n\n`{model.path}` · {_counts(model)}\n"


def _model(model: Model, *, compact: bool) -> str:
    bad = [item for item in model.items if item.outcome in ("failed", "error")]
    lines = [
        "",
        f"### {'✅' if model.passed else '❌'} {model.name}",
        "",
        f"`{model.path}` · {_counts(model)}",
    ]
    if model.diff is not None:
        lines += _diff(model.diff, compact=compact)
    if bad:
        shown = bad[:_COMPACT_FAILURES] if compact else bad
        lines += ["", "| | check | expected | actual | where |", "|---|---|---|---|---|"]
        lines += [_item_row(item) for item in shown]
        if len(shown) < len(bad):
            lines.append(f"\n…and {len(bad) - len(shown)} more failures (see the JSON report).")
    bars = [bar for item in model.section("memory") for bar in memory_bars(item)]
    if bars:
        lines += ["", "#### Memory: estimate vs budget", ""]
        lines += [] if compact else [mermaid_chart(bars), ""]
        lines.append(usage_table(bars))
    smoke = model.section("smoke")
    if smoke:
        lines += ["", "#### Smoke", "", "| | check | answer |", "|---|---|---|"]
        for item in smoke:
            answer = _clip(_answer(item), 120 if compact else _ANSWER)
            lines.append(
                f"| {_ICON.get(item.outcome, '?')} | {_cell(item.name)} | {_cell(answer, 0)} |"
            )
    if model.digests:
        lines += ["", "#### Digests", "", "| reference | digest |", "|---|---|"]
        lines += [f"| {_cell(ref)} | `{digest}` |" for ref, digest in model.digests.items()]
    elif model.published is False and model.publish_note:
        lines += ["", f"Not published: {_cell(model.publish_note, 300)}"]
    passed = [item for item in model.items if item.outcome not in ("failed", "error")]
    if passed and not compact:
        lines += ["", f"<details><summary>{len(passed)} other checks</summary>", ""]
        lines += ["| | check | expected | actual | where |", "|---|---|---|---|---|"]
        lines += [_item_row(item) for item in passed]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _diff(diff: Diff, *, compact: bool) -> list[str]:
    """This build against the published tag: a headline a reviewer reads before merging, and
    a table of what changed (facts first, then tensor types, metadata, labels)."""
    lines = [
        "",
        f"**Against the published `{_code_text(diff.reference)}`:** {_cell(diff.headline)}",
    ]
    if not diff.changes:
        return lines
    row = "| {} | {} | {} | {} |"
    table = ["", row.format("what", "published", "this build", "change"), "|---|---|---|---|"]
    rows = [
        row.format(
            _cell(c.what),
            _code(c.before or "") or "—",
            _code(c.after or "") or "—",
            _cell(c.delta or ""),
        )
        for c in diff.changes
    ]
    shown = 5 if compact else _DIFF_ROWS
    lines += table + rows[:shown]
    rest = rows[shown:]
    if rest and compact:
        lines.append(f"\n…and {len(rest)} more changes (see the JSON report).")
    elif rest:
        lines += ["", f"<details><summary>{len(rest)} more changes</summary>", *table, *rest]
        lines += ["", "</details>"]
    return lines


def _code_text(text: str) -> str:
    return _clip(text, _CELL).replace("`", "'")


def _counts(model: Model) -> str:
    parts = [f"{len(model.items)} checks"]
    for outcome in ("passed", "failed", "error", "skipped", "xfailed"):
        count = model.count(outcome)
        if count:
            parts.append(f"{count} {outcome}")
    return ", ".join(parts)


def _item_row(item: Item) -> str:
    expected = _value(item.expected) if item.expected is not None else ""
    bars = memory_bars(item) if item.section == "memory" else []
    if item.outcome == "error" or (item.actual is None and item.outcome != "passed"):
        actual = item.message
    elif bars:
        # Bytes as people read them, per device, instead of the raw JSON.
        actual = "; ".join(f"{b.device or 'total'} {format_size(b.estimate)}" for b in bars)
        budgets = [f"{b.device or 'total'} ≤ {format_size(b.budget)}" for b in bars if b.budget]
        expected = "; ".join(budgets) or expected
    elif item.section == "smoke":
        actual = _answer(item)
    else:
        actual = _value(item.actual)
    icon = _ICON.get(item.outcome, "?")
    return (
        f"| {icon} | {_cell(item.label)} | {_code(expected)} | {_code(actual)} "
        f"| {_cell(item.location)} |"
    )


def _answer(item: Item) -> str:
    actual = item.actual
    if isinstance(actual, str):
        return actual
    if isinstance(actual, Mapping):
        for key in ("text", "answer", "content"):
            if isinstance(actual.get(key), str):
                return str(actual[key])
    return item.message


def _value(value: Any) -> str:
    """An expectation or measurement in a few characters: ``'llama'``, ``[22M, 23M]``."""
    if isinstance(value, Mapping) and set(value) == {"equals"}:
        return _value(value["equals"])
    if isinstance(value, Mapping) and isinstance(value.get("written"), str):
        return str(value["written"])  # as model.yaml has it: 134.52M, not its bounds
    if isinstance(value, Mapping) and set(value) == {"min", "max"}:
        return f"[{value['min']}, {value['max']}]"
    if isinstance(value, Mapping) and set(value) == {"min"}:
        return f"≥ {value['min']}"
    if isinstance(value, Mapping) and set(value) == {"max"}:
        return f"≤ {value['max']}"
    if isinstance(value, Mapping) and set(value) == {"present"}:
        return "present" if value["present"] else "absent"
    if isinstance(value, Mapping) and len(value) == 1:
        ((key, inner),) = value.items()
        return f"{key} {inner if isinstance(inner, str) else _value(inner)}"
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        return repr(value)


def _code(text: str) -> str:
    if not text:
        return ""
    # In a code span only the table's pipe needs its escape; backslashes stay as they are.
    clipped = _clip(text, _CELL).replace("`", "'").replace("|", "\\|")
    return "`" + " ".join(clipped.splitlines()) + "`"


def _cell(text: str, limit: int = _CELL) -> str:
    """Text safe inside a table cell: no pipe or line break ends the cell early."""
    text = _clip(text, limit) if limit else text
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
    return " ".join(text.split("\n")).replace("\r", " ")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _cut(text: str, limit: int) -> str:
    """The last resort: cut at a line boundary to ``limit`` bytes, saying so."""
    if _size(text) <= limit:
        return text
    note = "\n\n…(cut to stay under GitHub's size limit; the JSON report has every check)\n"
    room = max(0, limit - _size(note))
    cut = text.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return cut[: cut.rfind("\n") + 1 or len(cut)] + note
