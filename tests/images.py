"""Small OCI layouts for tests and benchmarks: one image of the given files, tagged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.oci import Layer, LayerEntry, LayoutWriter


def write_image(
    layout: Path,
    entries: Sequence[LayerEntry],
    *,
    compression: str = "none",
    cmd: Sequence[str] | None = None,
    tag: str = "v1",
    layers: int = 1,
) -> list[Layer]:
    """An image at ``layout`` tagged ``tag``: ``entries`` in one layer, or one layer each with
    ``layers=len(entries)``; ``cmd`` its config's Cmd. Returns the layers written."""
    groups = [list(entries)] if layers == 1 else [[entry] for entry in entries]
    with LayoutWriter(layout) as writer:
        written = [writer.add_layer(group, compression) for group in groups]
        config: dict[str, object] = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in written]},
        }
        if cmd is not None:
            config["config"] = {"Cmd": list(cmd)}
        writer.tag(writer.add_image(config, written), tag)
    return written
