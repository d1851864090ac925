"""Mark and sweep: whatever no reference in ``refs.json`` reaches is deleted.

A reference reaches its manifest (and the index it came from); a manifest reaches its config,
its raw layers (blobs) and its tar layers (unpacked directories); and its model directory.
Model directories go first, so that the bytes of a layer are counted as freed when the last
link to them goes. Staging directories of processes that no longer run are swept too.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ._records import Collected
from ._resume import sweep_resumable
from ._root import StorePaths, read_refs
from ._unpack import layer_compression

__all__ = ["collect", "remove_tree"]


def collect(paths: StorePaths) -> Collected:
    """Sweep the store; the caller holds the writer lock."""
    refs = read_refs(paths)
    manifests = {entry.manifest for entry in refs.values()}
    blobs = set(manifests) | {entry.index for entry in refs.values() if entry.index}
    layers: set[str] = set()
    for digest in manifests:
        try:
            manifest = json.loads(paths.blob(digest).read_bytes())
        except (OSError, ValueError):
            continue
        config = manifest.get("config") or {}
        blobs.add(str(config.get("digest")))
        for layer in manifest.get("layers") or []:
            media_type = str(layer.get("mediaType", ""))
            (blobs if layer_compression(media_type) is None else layers).add(str(layer["digest"]))
    removed: list[str] = []
    freed = 0
    for folder, live in ((paths.models, manifests), (paths.layers, layers), (paths.blobs, blobs)):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if f"sha256:{entry.name}" in live:
                continue
            freed += remove_tree(entry)
            removed.append(f"sha256:{entry.name}")
    if paths.tmp.is_dir():
        freed += sweep_resumable(paths.tmp, set(), remove_tree)
        for entry in paths.tmp.iterdir():
            if entry.name.startswith("resume-"):
                continue  # a pull holds it now (it would have been swept)
            pid = entry.name.split("-", 1)[0]
            if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
                freed += remove_tree(entry)
    return Collected((), tuple(dict.fromkeys(removed)), freed)


def remove_tree(path: Path) -> int:
    """Delete a file or directory tree (read-only parts included); return the bytes freed,
    counting a file only when its last link goes."""
    freed = 0
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        freed += info.st_size if info.st_nlink == 1 else 0
        path.unlink()
        return freed
    os.chmod(path, stat.S_IRWXU)
    for root, dirs, _files in os.walk(path, topdown=True):
        for name in dirs:
            child = os.path.join(root, name)
            if not os.path.islink(child):
                os.chmod(child, stat.S_IRWXU)
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            child = os.path.join(root, name)
            info = os.lstat(child)
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                freed += info.st_size
            os.unlink(child)
        for name in dirs:
            child = os.path.join(root, name)
            if os.path.islink(child):
                os.unlink(child)
            else:
                os.rmdir(child)
    os.rmdir(path)
    return freed
