"""What each Packerfile instruction does to a stage: its files, its history, its config.

Every filesystem step (ADD, COPY, CAT, CONVERT, QUANTIZE) yields a ``Change`` — the files it
wrote — which becomes one layer if its stage is in the target's lineage. ARG, LABEL and CMD add
history only. Expensive steps go through the step cache.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from harness.builder._archive import is_archive, unpack_archive
from harness.builder._cache import StepCache, step_key
from harness.builder._fetch import download, git_clone, url_basename
from harness.builder._layers import Layers, Pending
from harness.builder._sources import DirectorySource, Match, Source, TreeSource, place
from harness.builder._state import (
    Change,
    History,
    StageState,
    chmod_bits,
    directory_files,
    file_node,
    listing,
    owner_ids,
)
from harness.builder._store import ContentStore, stamp_of
from harness.builder._tree import Node, Tree, clean_path, join
from harness.errors import BuildError, HarnessError, Location
from harness.gguf import read_facts
from harness.packerfile import (
    Add,
    Arg,
    Cat,
    Cmd,
    Convert,
    Copy,
    Instruction,
    Label,
    Quantize,
    StageRef,
    is_git_source,
    is_http_source,
)
from harness.toolchain import convert, llama_cpp_build, quantize

__all__ = ["Steps"]

# Types llama-quantize takes without --allow-requantize (general.file_type names).
_UNQUANTIZED = frozenset({"F32", "F16", "BF16"})

Report = Callable[[str], None]


class Steps:
    """Runs one stage's instructions; sources resolve through ``source_for``."""

    def __init__(
        self,
        *,
        store: ContentStore,
        cache: StepCache,
        source_for: Callable[[StageRef, StageState, Location], Source],
        report: Report,
        layers: Layers | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.source_for = source_for
        self.report = report
        self.layers = layers  # set when this stage's layers are the image's

    def run(self, inst: Instruction, state: StageState) -> StageState:
        state = state.copy()
        if isinstance(inst, Arg | Label | Cmd):
            if isinstance(inst, Label):
                state.labels.update(dict(inst.items))
            elif isinstance(inst, Cmd):
                state.cmd = inst.args
            state.history.append(History(f"{inst.created_by} # buildkit", True))
            return state
        if isinstance(inst, Cat):
            files = {clean_path(inst.dest): self._bytes_node(inst.content.encode())}
        elif isinstance(inst, Copy):
            files = self._copy(inst, state)
        elif isinstance(inst, Add):
            files = self._add(inst, state)
        elif isinstance(inst, Convert):
            files = self._convert(inst, state)
        else:
            files = self._quantize(inst, state)
        state.tree = state.tree.updated(files)
        state.layers.append(Change(inst.created_by, files))
        state.history.append(History(f"{inst.created_by} # buildkit", False))
        return state

    # --- ADD / COPY ---------------------------------------------------------------------------

    def _copy(self, inst: Copy, state: StageState) -> dict[str, Node]:
        if inst.heredocs:
            return self._heredocs(inst.heredocs, inst.dest, inst.chown, inst.chmod, inst, state)
        ref = inst.from_ref or StageRef("context", "context")
        source = self.source_for(ref, state, inst.where("flag:from"))
        matches = [
            m
            for p in inst.sources
            for m in source.matches(p, inst.exclude, inst.location, defer=True)
        ]
        pending: dict[str, Pending] = {}
        files = self._place(matches, inst, state, parents=inst.parents, pending=pending)
        return self._written(files, pending)

    def _add(self, inst: Add, state: StageState) -> dict[str, Node]:
        if inst.heredocs:
            return self._heredocs(inst.heredocs, inst.dest, inst.chown, inst.chmod, inst, state)
        matches: list[Match] = []
        context = self.source_for(StageRef("context", "context"), state, inst.location)
        for src in inst.sources:
            if is_git_source(src):
                matches.append(self._git(src, inst))
            elif is_http_source(src):
                matches.append(self._http(src, inst))
            else:
                for match in context.matches(src, inst.exclude, inst.location, defer=True):
                    matches.append(self._maybe_unpack(match, inst))
        pending: dict[str, Pending] = {}
        files = self._place(matches, inst, state, parents=False, pending=pending)
        return self._written(files, pending)

    def _written(self, files: dict[str, Node], pending: dict[str, Pending]) -> dict[str, Node]:
        """Files not hashed yet are hashed by the pass that writes an image stage's layer (one
        read of a model); a stage outside the image holds stand-ins for them (the store's
        ``unhashed``), hashed by that pass if the image copies them, else when a step needs
        their digest."""
        if self.layers is None:
            for path, p in pending.items():
                files[path] = Node(
                    self.store.unhashed(p.path, p.stamp), p.size, p.mode, p.uid, p.gid
                )
            return files
        for path, node in list(files.items()):
            waiting = self.store.waiting(node.digest)
            if waiting is not None:
                del files[path]
                pending[path] = Pending(*waiting, node.size, node.mode, node.uid, node.gid)
            else:  # a stand-in hashed since is its digest now
                files[path] = self._hashed(node)
        return self.layers.write(files, pending) if pending else files

    def _hashed(self, node: Node) -> Node:
        return Node(self.store.resolve(node.digest), node.size, node.mode, node.uid, node.gid)

    def _place(
        self,
        matches: list[Match],
        inst: Add | Copy,
        state: StageState,
        *,
        parents: bool,
        pending: dict[str, Pending] | None = None,
    ) -> dict[str, Node]:
        """Where each matched file goes; files not hashed yet go to ``pending`` instead."""
        dest = inst.dest
        into_dir = dest.endswith("/") or clean_path(dest) == "" or state.tree.is_dir(dest)
        if len(matches) > 1 and not dest.endswith("/"):
            raise BuildError(
                f"{inst.keyword.upper()} with several sources needs a destination ending in /",
                inst.where("dest"),
            )
        uid, gid = owner_ids(inst.chown, state.tree, self.store, inst.location)
        mode = chmod_bits(inst.chmod, inst.location)
        return place(matches, dest, into_dir, parents, (uid, gid, mode), pending)

    def _heredocs(
        self,
        docs: tuple[object, ...],
        dest: str,
        chown: str | None,
        chmod: str | None,
        inst: Add | Copy,
        state: StageState,
    ) -> dict[str, Node]:
        uid, gid = owner_ids(chown, state.tree, self.store, inst.location)
        mode = chmod_bits(chmod, inst.location)
        files = {}
        for doc in docs:
            name, content = getattr(doc, "name"), getattr(doc, "content")  # noqa: B009
            path = join(dest, name) if dest.endswith("/") or len(docs) > 1 else clean_path(dest)
            files[path] = self._bytes_node(content.encode()).owned(uid, gid, mode)
        return files

    def _http(self, url: str, inst: Add) -> Match:
        # Keyed by URL and checksum: an unchanged rebuild downloads nothing (--no-cache refetches).
        key = step_key("ADD-http", url, inst.checksum)
        files = self.cache.get(key)
        if files is None:
            self.report(f"downloading {url}")
            # Not a scratch directory: an interrupted download's .part file stays here for the
            # next build to resume.
            downloads = self.store.root / "downloads" / key
            downloads.mkdir(parents=True, exist_ok=True)
            target = downloads / url_basename(url)
            verified = download(url, target, checksum=inst.checksum, where=inst.location)
            size = target.stat().st_size
            files = {"": Node(self.store.adopt(target, verified), size)}
            shutil.rmtree(downloads, ignore_errors=True)
            self.cache.put(key, files)
        node = files[""]
        return Match(url_basename(url), False, {"": node})

    def _git(self, url: str, inst: Add) -> Match:
        scratch = self.store.scratch()
        try:
            self.report(f"cloning {url}")
            checkout = scratch / "repo"
            git_clone(url, checkout, keep_git_dir=inst.keep_git_dir, where=inst.location)
            source = DirectorySource(url, checkout, self.store, None)
            (match,) = source.matches("", inst.exclude, inst.location)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return Match("", True, match.files)

    def _maybe_unpack(self, match: Match, inst: Add) -> Match:
        """ADD unpacks local tar archives (plain, gzip, bzip2, xz) into the destination. A
        file not hashed yet is told by its first bytes: a plain one stays pending, for its
        layer's pass to hash (one read of a model); an archive is hashed and unpacked."""
        if match.is_dir:
            return match
        if match.pending:
            (waiting,) = match.pending.values()
            if not is_archive(waiting.path):
                return match
            node = Node(self.store.put_file(waiting.path), waiting.size, waiting.mode)
            match = Match(match.path, False, {"": node})
        node = match.files[""]
        blob = self.store.path(node.digest)
        if not is_archive(blob):
            return match
        key = step_key("ADD-unpack", node.digest)
        files = self.cache.get(key)
        if files is None:
            files = unpack_archive(self.store, blob, match.path or inst.sources[0], inst.location)
            self.cache.put(key, files)
        return Match("", True, files)

    # --- CONVERT / QUANTIZE ------------------------------------------------------------------

    def _convert(self, inst: Convert, state: StageState) -> dict[str, Node]:
        source = self._source_tree(inst.from_ref, state, inst.location)
        model = self._all_hashed(directory_files(source, inst.source, inst.where("arg:0")))
        base = None
        if inst.base:
            base = self._all_hashed(directory_files(source, inst.base, inst.where("flag:base")))
        key = step_key(
            "CONVERT",
            inst.type,
            inst.cls,
            posixpath.basename(clean_path(inst.source)),
            llama_cpp_build().label,
            listing(model),
            listing(base) if base is not None else None,
        )
        return self._cached(key, inst, lambda out: self._run_convert(inst, model, base, out))

    def _all_hashed(self, files: dict[str, Node]) -> dict[str, Node]:
        return {rel: self._hashed(node) for rel, node in files.items()}

    def _run_convert(
        self, inst: Convert, model: dict[str, Node], base: dict[str, Node] | None, out: Path
    ) -> None:
        work = out.parent
        model_dir = self._materialize(
            model, work / "in" / posixpath.basename(clean_path(inst.source))
        )
        base_dir = None
        if base is not None and inst.base:
            base_dir = self._materialize(
                base, work / "base" / posixpath.basename(clean_path(inst.base))
            )
        cls: Literal["model", "lora"] = "lora" if inst.cls == "lora" else "model"
        convert(model_dir, out, out_type=inst.type, cls=cls, base=base_dir)

    def _quantize(self, inst: Quantize, state: StageState) -> dict[str, Node]:
        source = self._source_tree(inst.from_ref, state, inst.location)
        model = self._hashed(file_node(source, inst.source, inst.where("arg:0")))
        imatrix = (
            self._hashed(file_node(source, inst.imatrix, inst.where("flag:imatrix")))
            if inst.imatrix
            else None
        )
        if not inst.allow_requantize:
            self._refuse_requantize(inst, model)
        key = step_key(
            "QUANTIZE",
            inst.type,
            inst.allow_requantize,
            inst.include_weights,
            inst.exclude_weights,
            inst.pure,
            inst.leave_output_tensor,
            inst.output_tensor_type,
            inst.token_embedding_type,
            llama_cpp_build().label,
            model.digest,
            imatrix.digest if imatrix else None,
        )

        def run(out: Path) -> None:
            quantize(
                self.store.path(model.digest),
                out,
                type=inst.type,
                imatrix=self.store.path(imatrix.digest) if imatrix else None,
                include_weights=inst.include_weights,
                exclude_weights=inst.exclude_weights,
                pure=inst.pure,
                leave_output_tensor=inst.leave_output_tensor,
                allow_requantize=inst.allow_requantize,
                output_tensor_type=inst.output_tensor_type,
                token_embedding_type=inst.token_embedding_type,
            )

        return self._cached(key, inst, run)

    def _refuse_requantize(self, inst: Quantize, model: Node) -> None:
        """llama-quantize refuses quantized input without --allow-requantize, late and naming
        a store path; say it before it runs, naming the file as the Packerfile wrote it."""
        try:
            file_type = read_facts(self.store.path(model.digest)).file_type
        except HarnessError as error:
            raise BuildError(f"QUANTIZE {inst.source}: {error}", inst.where("arg:0")) from None
        if file_type not in _UNQUANTIZED:
            raise BuildError(
                f"QUANTIZE {inst.source} is already quantized ({file_type}): add"
                " --allow-requantize to quantize it again (each pass costs quality)",
                inst.where("arg:0"),
            )

    def _cached(
        self, key: str, inst: Convert | Quantize, run: Callable[[Path], None]
    ) -> dict[str, Node]:
        dest = clean_path(inst.dest)
        hit = self.cache.get(key)
        if hit is not None:  # an output kept unhashed is hashed by this stage's layer pass
            return self._written({dest: hit[""]}, {})
        self.report(inst.created_by)
        scratch = self.store.scratch()
        try:
            out = scratch / "out.gguf"
            try:
                run(out)
            except HarnessError as error:
                raise BuildError(f"{inst.keyword.upper()} failed: {error}", inst.location) from None
            if self.layers is None:  # hashed when the image's layer pass or a step reads it
                return {dest: self.cache.put_output(key, out)}
            # hashed by the pass that writes this step's layer: one read of the output
            output = Pending(out, stamp_of(out), out.stat().st_size, output=True)
            node = self.layers.write({}, {dest: output})[dest]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.cache.put(key, {"": node})
        return {dest: node}

    def _source_tree(self, ref: StageRef | None, state: StageState, where: Location) -> Tree:
        source = self.source_for(ref or StageRef("stage", "current"), state, where)
        if isinstance(source, TreeSource):
            return source.tree
        (match,) = source.matches("", (), where)
        return Tree(match.files)

    def _materialize(self, files: Mapping[str, Node], directory: Path) -> Path:
        """A real directory of store files (hard links, else symbolic links) for a tool."""
        for rel, node in files.items():
            path = directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            blob = self.store.path(node.digest)
            try:
                os.link(blob, path)
            except OSError:
                os.symlink(blob, path)
        return directory

    def _bytes_node(self, data: bytes) -> Node:
        return Node(self.store.put_bytes(data), len(data))
