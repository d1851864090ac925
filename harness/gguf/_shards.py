"""Read a model that may be split into shards (``NAME-00001-of-00003.gguf``) as one model.

Shards are named and marked the way llama.cpp's gguf-split and gguf-py's writer do: the file name
carries the shard number and count, and each shard's metadata has ``split.no`` (0-based),
``split.count`` and, in the first, ``split.tensors.count`` for the whole model.
"""

from __future__ import annotations

import os
import re

from harness.errors import GGUFError, Location

from ._constants import Keys
from ._facts import GGUFFacts, derive_facts
from ._header import parse_header
from ._records import GGUFHeader

__all__ = ["read_facts", "shard_names", "shard_paths"]

_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5,})-of-(?P<count>\d{5,})\.gguf$")
_PER_LAYER = tuple(
    "." + key.split(".", 1)[1] for key in (Keys.Attention.HEAD_COUNT, Keys.Attention.HEAD_COUNT_KV)
)


def read_facts(path: str | os.PathLike[str]) -> GGUFFacts:
    """The facts of the model whose (first) file is ``path``; every shard is read."""
    first_path = os.fspath(path)
    first = _read(first_path)
    paths = shard_paths(first_path, first)
    headers = [first]
    for number, shard in enumerate(paths[1:], start=2):
        if not os.path.exists(shard):
            raise GGUFError(
                f"shard {number} of {len(paths)} is missing (split model {first_path!r})",
                Location(path=shard),
            )
        headers.append(_read(shard))
    for index, header in enumerate(headers):
        _check_marks(header, index, len(headers))
    declared = _uint(first, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)
    found = sum(h.tensor_count for h in headers)
    if len(headers) > 1 and declared is not None and declared != found:
        field = first.metadata[Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT]
        raise GGUFError(
            f"{field.key} = {declared} but the {len(headers)} shards hold {found} tensors",
            Location(path=first_path, offset=field.offset),
        )
    return derive_facts(headers, paths)


def shard_paths(path: str, header: GGUFHeader) -> tuple[str, ...]:
    """Every shard of the model whose first file is ``path`` (just ``path`` if not split)."""
    match = _SHARD_NAME.match(os.path.basename(path))
    count = _uint(header, Keys.Split.LLM_KV_SPLIT_COUNT)
    if count is None and match is not None:
        count = int(match["count"])
    if count is None or (count <= 1 and match is None):
        return (path,)
    if match is None:
        raise _mark_error(
            header,
            Keys.Split.LLM_KV_SPLIT_COUNT,
            f"split.count = {count} but the name does not end in -00001-of-{count:05d}.gguf",
        )
    if int(match["count"]) != count:
        raise _mark_error(
            header,
            Keys.Split.LLM_KV_SPLIT_COUNT,
            f"the name says {int(match['count'])} shards but split.count = {count}",
        )
    if int(match["no"]) != 1:
        first = f"{match['prefix']}-{1:05d}-of-{count:05d}.gguf"
        raise GGUFError(
            f"this is shard {int(match['no'])} of {count}: name the first shard, {first}",
            Location(path=path),
        )
    folder = os.path.dirname(path)
    return tuple(
        os.path.join(folder, f"{match['prefix']}-{number:05d}-of-{count:05d}.gguf")
        for number in range(1, count + 1)
    )


def shard_names(path: str) -> tuple[str, ...]:
    """Every shard of a split model by its first shard's name alone (``path`` itself when the
    name is not a first shard's): what an image must hold as files beside ``-m`` for llama.cpp
    to load it. Any path form: a host path, or one as an image's Cmd writes it."""
    folder, _, name = path.rpartition("/")
    match = _SHARD_NAME.match(name)
    if match is None or int(match["no"]) != 1:
        return (path,)
    count = int(match["count"])
    head = f"{folder}/" if folder or path.startswith("/") else ""
    return tuple(
        f"{head}{match['prefix']}-{number:05d}-of-{count:05d}.gguf"
        for number in range(1, count + 1)
    )


def _read(path: str) -> GGUFHeader:
    # Per-layer head counts are arrays as long as the model is deep; keep them whatever their size.
    return parse_header(path, lambda key: key.endswith(_PER_LAYER))


def _check_marks(header: GGUFHeader, index: int, count: int) -> None:
    number = _uint(header, Keys.Split.LLM_KV_SPLIT_NO)
    if number is not None and number != index:
        message = f"split.no = {number} but this is shard {index + 1} of {count} (expected {index})"
        raise _mark_error(header, Keys.Split.LLM_KV_SPLIT_NO, message)
    total = _uint(header, Keys.Split.LLM_KV_SPLIT_COUNT)
    if total is not None and count > 1 and total != count:
        message = f"split.count = {total} but the model has {count} shards"
        raise _mark_error(header, Keys.Split.LLM_KV_SPLIT_COUNT, message)


def _uint(header: GGUFHeader, key: str) -> int | None:
    value = header.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mark_error(header: GGUFHeader, key: str, message: str) -> GGUFError:
    field = header.metadata.get(key)
    offset = None if field is None else field.offset
    return GGUFError(message, Location(path=header.path, offset=offset))
