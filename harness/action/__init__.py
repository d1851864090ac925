"""gguf-harness on GitHub Actions: the report where people look, and models spread over runners.

From the JSON report (``--harness-report``): ``summary_markdown`` for ``$GITHUB_STEP_SUMMARY``
(checks, memory estimate vs budget as a chart, smoke answers, digests, each model's quant
ladder: ``ladders``), ``annotations`` at the model.yaml line of each failure with
``workflow_commands`` to print them, ``write_outputs`` for ``$GITHUB_OUTPUT``; with PyGithub
a check run, a sticky PR comment and a release (``harness.action._github``, imported only when
used). ``run_action`` does all of it the way action.yml calls it. ``matrix`` and ``select``
split a repository's models into matrix cells.
"""

from harness.action._annotations import (
    STEP_LIMIT,
    Annotation,
    annotations,
    check_run_annotations,
    workflow_commands,
)
from harness.action._chart import mermaid_chart, text_bar, usage_table
from harness.action._ladder import Ladder, Rung, ladder_markdown, ladders
from harness.action._memory import Bar, memory_bars
from harness.action._outputs import append_summary, format_outputs, write_outputs
from harness.action._records import (
    Item,
    Model,
    Quality,
    Run,
    load_report,
    load_reports,
    parse_report,
)
from harness.action._run import run_action
from harness.action._summary import COMMENT_LIMIT, SUMMARY_LIMIT, summary_markdown
from harness.expect import Selected, find_model_files, matrix, parse_only, select

__all__ = [
    "COMMENT_LIMIT",
    "STEP_LIMIT",
    "SUMMARY_LIMIT",
    "Annotation",
    "Bar",
    "Item",
    "Ladder",
    "Model",
    "Quality",
    "Run",
    "Rung",
    "Selected",
    "annotations",
    "append_summary",
    "check_run_annotations",
    "find_model_files",
    "format_outputs",
    "ladder_markdown",
    "ladders",
    "load_report",
    "load_reports",
    "matrix",
    "memory_bars",
    "mermaid_chart",
    "parse_only",
    "parse_report",
    "run_action",
    "select",
    "summary_markdown",
    "text_bar",
    "usage_table",
    "workflow_commands",
    "write_outputs",
]
