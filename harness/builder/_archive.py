"""ADD's local archives: told from a plain file by their first bytes, unpacked into the store.

Telling costs a header, not the file: a multi-GB model that ADD names is no archive, and is read
once, by the pass that writes its layer; only an archive is hashed and unpacked here.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from harness.builder._store import ContentStore
from harness.builder._tree import Node, clean_path
from harness.errors import BuildError, Location
from harness.oci import MAX_EXPANSION, expansion_cap

__all__ = ["is_archive", "unpack_archive"]


def is_archive(path: Path) -> bool:
    """Whether ADD unpacks ``path``: a tar, plain or gzip, bzip2 or xz compressed. tarfile
    reads the first member's header only (through the decompressor for a compressed one)."""
    return tarfile.is_tarfile(path)


def unpack_archive(
    store: ContentStore, blob: Path, name_written: str, where: Location
) -> dict[str, Node]:
    """The archive's files, each streamed into the store: regular files and directories only."""
    files: dict[str, Node] = {}
    # An archive may expand as far as the image layers may (harness.oci's caps) and the
    # disk allows: an archive bomb stops here, member by member, streamed.
    budget = min(expansion_cap(blob.stat().st_size), shutil.disk_usage(store.root).free)
    spent = 0

    def spend(size: int) -> None:
        nonlocal spent
        spent += size
        if spent > budget:
            raise BuildError(
                f"{name_written}: unpacks to more than {budget} bytes ({MAX_EXPANSION:g}x the"
                " archive, or the free disk): refused",
                where,
            )

    try:
        with tarfile.open(blob) as archive:
            for member in archive:
                name = clean_path(member.name)
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    raise BuildError(f"archive member {member.name!r} leaves the root", where)
                if member.sparse is not None:  # zeros from nowhere, maybe forever
                    raise BuildError(
                        f"archive member {member.name!r} is a sparse file: refused", where
                    )
                if member.isfile():
                    reader = archive.extractfile(member)
                    assert reader is not None
                    digest, size = store.put_stream(reader, spend)
                    files[name] = Node(digest, size, member.mode & 0o7777)
                elif not member.isdir():
                    raise BuildError(
                        f"archive member {member.name!r}: links and devices are not unpacked",
                        where,
                    )
    except (tarfile.TarError, EOFError, OSError) as error:
        raise BuildError(f"{name_written}: cannot unpack: {error}", where) from None
    return files
