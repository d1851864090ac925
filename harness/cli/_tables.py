"""What the CLI prints as tables and summaries, one function per kind of output (rich, loaded by
the functions that draw with it: `inspect FILE` prints plain columns and starts faster without)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import printable
from harness.units import format_count, format_size

if TYPE_CHECKING:  # types only: `inspect FILE` must not load the estimator or the store
    from rich.table import Table

    from harness.estimate import Estimate
    from harness.gguf import GGUFFacts
    from harness.store import ModelRow, ModelSummary

__all__ = ["estimate_table", "print_facts", "print_rows", "print_summary"]


def print_summary(summary: ModelSummary) -> None:
    row = summary.row
    fields = [
        ("NAME", f"{row.name}:{row.tag}"), ("ID", row.short_id), ("FORMAT", row.format),
        ("ARCH", row.arch), ("PARAMS", row.params), ("BPW", row.bpw), ("TYPE", row.type),
        ("SIZE", format_size(row.size)), ("CONTEXT", str(summary.context or "")),
        ("LAYERS", str(summary.layers or "")), ("USAGE", row.usage), ("CREATED", row.created),
    ]  # fmt: skip
    for key, value in fields:
        print(f"{key:<8} {printable(value)}")
    if summary.labels:
        print("LABELS")
        for key, value in sorted(summary.labels.items()):
            print(f"  {printable(key)}={printable(value)}")


def print_facts(facts: list[GGUFFacts]) -> None:
    """``inspect FILE``: plain aligned columns, not rich, so that a header read starts in under
    0.15 s (rich is a third of that); a path or name is printed whole, never as markup."""
    head = ("FILE", "ARCH", "NAME", "TYPE", "PARAMS", "BPW", "SIZE", "CONTEXT", "TENSORS")
    rows = [head] + [
        (
            printable(f.path),
            printable(f.architecture),
            printable(f.name or ""),
            f"{f.file_type} (inferred)" if f.file_type_inferred else f.file_type,
            format_count(f.parameters),
            f"{f.bpw:.2f}",
            format_size(f.size),
            str(f.context_length or ""),
            str(f.tensor_count),
        )
        for f in facts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    right = {"PARAMS", "BPW", "SIZE"}
    for row in rows:
        cells = (
            cell.rjust(width) if name in right else cell.ljust(width)
            for name, cell, width in zip(head, row, widths, strict=True)
        )
        print("  ".join(cells).rstrip())


def estimate_table(rows: list[Estimate]) -> Table:
    from rich.table import Table

    table = Table(header_style="bold")
    head = ["ARCH", "CONTEXT\nSIZE", "BATCH SIZE\n(L / P)", "FLASH\nATTENTION", "MMAP\nLOAD"]
    head += ["EMBEDDING\nONLY", "DISTRIBUTABLE", "OFFLOAD\nLAYERS", "FULL\nOFFLOADED"]
    head += ["RAM\nUMA", "RAM\nNONUMA"]
    for i in range(len(rows[0].devices)):
        head += [f"VRAM {i}\nLAYERS", f"VRAM {i}\nUMA", f"VRAM {i}\nNONUMA"]
    for column in head:
        table.add_column(column, justify="right")

    def yes(flag: bool) -> str:
        return "Yes" if flag else "No"

    for e in rows:
        row = [
            e.arch,
            str(e.context_size),
            f"{e.batch_size} / {e.ubatch_size}",
            "Enabled" if e.flash_attn else "Disabled",
            "Enabled" if e.mmap else "Disabled",
            yes(e.embedding_only),
            "Supported" if e.distributable else "Not Supported",
            f"{e.offload_layers} of {e.total_layers}",
            yes(e.full_offload),
            format_size(e.ram_uma),
            format_size(e.ram),
        ]
        for i, device in enumerate(e.devices):
            row += [str(device.layers), format_size(e.vram_uma(i)), format_size(device.total)]
        table.add_row(*row)
    return table


def print_rows(rows: list[ModelRow]) -> None:
    """``list``: the seed's columns, one row per reference."""
    from rich.console import Console
    from rich.table import Table

    from harness.store import ModelRow

    table = Table(box=None, header_style="bold")
    for column in ModelRow.COLUMNS:
        table.add_column(column)
    for r in rows:
        cells = (r.name, r.tag, r.short_id, r.arch, r.params, r.bpw, r.type, r.usage, r.created)
        table.add_row(*cells, format_size(r.size))
    Console(width=200).print(table)
