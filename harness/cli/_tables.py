"""What the CLI prints as tables and summaries (rich), one function per kind of output."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.errors import printable
from harness.estimate import Estimate
from harness.gguf import GGUFFacts
from harness.store import ModelRow, ModelSummary
from harness.units import format_count, format_size

__all__ = ["estimate_table", "facts_table", "print_rows", "print_summary"]


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


def facts_table(facts: list[GGUFFacts]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("FILE", "ARCH", "NAME", "TYPE", "PARAMS", "BPW", "SIZE", "CONTEXT", "TENSORS"):
        table.add_column(column, justify="right" if column in {"PARAMS", "BPW", "SIZE"} else "left")
    for f in facts:
        file_type = f"{f.file_type} (inferred)" if f.file_type_inferred else f.file_type
        table.add_row(
            f.path,
            f.architecture,
            f.name or "",
            file_type,
            format_count(f.parameters),
            f"{f.bpw:.2f}",
            format_size(f.size),
            str(f.context_length or ""),
            str(f.tensor_count),
        )
    return table


def estimate_table(rows: list[Estimate]) -> Table:
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
    table = Table(box=None, header_style="bold")
    for column in ModelRow.COLUMNS:
        table.add_column(column)
    for r in rows:
        cells = (r.name, r.tag, r.short_id, r.arch, r.params, r.bpw, r.type, r.usage, r.created)
        table.add_row(*cells, format_size(r.size))
    Console(width=200).print(table)
