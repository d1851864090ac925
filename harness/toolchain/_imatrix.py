"""Importance-matrix files, read the way llama-quantize reads them.

At the pinned commit ``llama_model_quantize_params.imatrix`` is a plain C array of
``{name, data, size}`` records, so the matrix can be handed to the library through ctypes; only
the file loader lives in llama-quantize's C++ (``common/imatrix-loader.cpp``) and is mirrored here:
the GGUF format (``<tensor>.in_sum2`` / ``<tensor>.counts``) and the legacy ``.dat`` format, with
the same normalisation, so the floats passed on are the ones llama-quantize would pass.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ToolchainError

if TYPE_CHECKING:  # numpy only where an imatrix is read or passed: not on the import path
    import numpy as np

__all__ = ["Imatrix", "load_imatrix"]

_IN_SUM2 = ".in_sum2"
_COUNTS = ".counts"
# llama-quantize refuses a GGUF imatrix without all three
_METADATA = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")


@dataclass(frozen=True)
class Imatrix:
    """Per-tensor importance values, already divided by their counts."""

    path: Path
    entries: Mapping[str, np.ndarray] = field(repr=False)
    datasets: tuple[str, ...] = ()
    chunk_count: int = 0
    legacy: bool = False

    def select(
        self, include: Collection[str] = (), exclude: Collection[str] = ()
    ) -> dict[str, np.ndarray]:
        """The entries llama-quantize keeps for ``--include-weights`` / ``--exclude-weights``.

        Both match by substring of the tensor name, as llama-quantize does.
        """
        if include and exclude:
            raise ToolchainError("include_weights and exclude_weights cannot be used together")
        kept = dict(self.entries)
        if exclude:
            kept = {k: v for k, v in kept.items() if not any(name in k for name in exclude)}
        if include:
            kept = {k: v for k, v in kept.items() if any(name in k for name in include)}
        return kept


def load_imatrix(path: str | Path) -> Imatrix:
    source = Path(path)
    try:
        with source.open("rb") as stream:
            magic = stream.read(4)
    except OSError as error:
        raise ToolchainError.at(source, f"cannot read imatrix: {error.strerror}") from None
    if magic == b"GGUF":
        return _load_gguf(source)
    return _load_legacy(source)


def _load_gguf(source: Path) -> Imatrix:
    import numpy as np
    from gguf import GGUFReader

    try:
        reader = GGUFReader(source)
    except (ValueError, OSError, IndexError) as error:
        raise ToolchainError.at(source, f"not a readable GGUF imatrix: {error}") from None
    if not reader.tensors:
        raise ToolchainError.at(source, "no data in imatrix file")
    fields = reader.fields
    if not all(k in fields for k in _METADATA):
        raise ToolchainError.at(source, "missing imatrix metadata")
    datasets = fields["imatrix.datasets"].contents()
    chunk_count = int(fields["imatrix.chunk_count"].contents())

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = str(tensor.name)
        if tensor.tensor_type.name != "F32":
            raise ToolchainError.at(source, f"sums and counts for {name} must be F32")
        values = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        if name.endswith(_IN_SUM2):
            sums[name.removesuffix(_IN_SUM2)] = values
        elif name.endswith(_COUNTS):
            counts[name.removesuffix(_COUNTS)] = values

    entries: dict[str, np.ndarray] = {}
    for name in sorted(sums.keys() | counts.keys()):
        if name not in sums or name not in counts:
            raise ToolchainError.at(source, f"mismatched sums and counts for {name}")
        entries[name] = _normalise(sums[name], _lround(counts[name]))
    return Imatrix(
        path=source,
        entries=entries,
        datasets=tuple(str(d) for d in (datasets if isinstance(datasets, list) else [])),
        chunk_count=chunk_count,
    )


def _lround(values: np.ndarray) -> np.ndarray:
    import numpy as np

    # std::lround: halves away from zero (numpy's rint would round them to even)
    rounded = np.where(values >= 0, np.floor(values + 0.5), np.ceil(values - 0.5))
    return rounded.astype(np.int64)


def _normalise(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    import numpy as np

    # the mean of the squared activations per column, per expert; an expert never routed to
    # gets neutral weights (1.0), exactly as llama-quantize does
    n_counts = max(counts.size, 1)
    per_row = sums.size // n_counts
    out = np.ones(sums.size, dtype=np.float32)
    for j, count in enumerate(counts.tolist()):
        block = slice(j * per_row, (j + 1) * per_row)
        if count > 0:
            out[block] = sums[block] / np.float32(count)
    return out


def _load_legacy(source: Path) -> Imatrix:
    import numpy as np

    data = source.read_bytes()
    reader = _Cursor(source, data)
    n_entries = reader.i32()
    if n_entries < 1:
        raise ToolchainError.at(source, "no data in imatrix file")
    entries: dict[str, np.ndarray] = {}
    for index in range(n_entries):
        name = reader.take(reader.i32(), f"name of entry {index + 1}").decode("utf-8", "replace")
        ncall = reader.i32()
        nval = reader.i32()
        if nval < 1:
            raise ToolchainError.at(source, f"bad number of values for entry {index + 1}")
        raw = reader.take(4 * nval, f"data of entry {index + 1}")
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        # legacy sums hold (sum/count)*ncall: dividing by ncall gives the mean back
        entries[name] = values / np.float32(ncall) if ncall > 0 else values
    chunk_count = 0
    datasets: tuple[str, ...] = ()
    if reader.remaining >= 4:  # the trailer (chunk count, dataset name) is optional
        chunk_count = reader.i32()
        if reader.remaining >= 4:
            length = reader.i32()
            if 0 < length <= reader.remaining:
                datasets = (reader.take(length, "dataset").decode("utf-8", "replace"),)
    return Imatrix(
        path=source, entries=entries, datasets=datasets, chunk_count=chunk_count, legacy=True
    )


class _Cursor:
    def __init__(self, source: Path, data: bytes) -> None:
        self.source = source
        self.data = data
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.offset + size > len(self.data):
            raise ToolchainError.at(self.source, f"imatrix file ends inside the {what}")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def i32(self) -> int:
        value: int = struct.unpack("<i", self.take(4, "entry header"))[0]
        return value
