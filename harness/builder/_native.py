"""The native builder: a Packerfile to an OCI image layout, in Python, without Docker.

The image is what GGUF Packer's BuildKit frontend makes (docs/image-format.md): one layer per
filesystem step of the target's lineage after the base image's layers, a history entry per
instruction, and the seed's ``config`` (Size, Model, Drafter, Projector, Adapters, Cmd, Labels).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.builder._cache import StepCache
from harness.builder._images import BaseImages
from harness.builder._layers import Layers
from harness.builder._sources import DirectorySource, Source, TreeSource
from harness.builder._state import BaseLayer, Change, StageState
from harness.builder._steps import Steps
from harness.builder._store import ContentStore, cache_root
from harness.builder._tree import Tree, clean_path
from harness.errors import BuildError, Location
from harness.gguf import read_header, shard_names
from harness.oci import (
    COMPRESSIONS,
    LABEL_PREFIX,
    Descriptor,
    HistoryEntry,
    Layer,
    LayoutWriter,
    default_mtime,
    derived_labels,
    gguf_entry,
    image_config,
    seed_config,
)
from harness.packerfile import (
    BuildPlan,
    Cmd,
    Convert,
    Quantize,
    StageRef,
    cmd_roles,
    find_packerfile,
    load,
    load_ignore,
    plan,
)
from harness.toolchain import llama_cpp_build

__all__ = ["DEFAULT_COMPRESSION", "LLAMA_CPP_LABEL", "BuildOptions", "BuildResult", "build"]

# Our own label: which llama.cpp converted or quantized the model (no other tool records it).
LLAMA_CPP_LABEL = LABEL_PREFIX + "llama-cpp"
# Uncompressed tar by default: gzip buys ~6 % of a quantized model for ~15x the build time at
# 3.8 GB, and every Docker, containerd and registry reads a plain tar (docs/image-format.md,
# benchmarks/scale.py).
DEFAULT_COMPRESSION = "none"


@dataclass(frozen=True)
class BuildOptions:
    context: Path
    output: Path
    packerfile: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    contexts: Mapping[str, Path] = field(default_factory=dict)
    tag: str = "latest"
    labels: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    compression: str = DEFAULT_COMPRESSION


@dataclass(frozen=True)
class BuildResult:
    output: Path
    tag: str
    manifest: Descriptor
    config: dict[str, Any]
    # The GGUF files the Cmd names (in-image path as written -> a readable copy), so that later
    # stages can read them without unpacking layers.
    files: dict[str, Path]
    cache_hits: int
    cache_misses: int


def build(options: BuildOptions, *, report: Callable[[str], None] | None = None) -> BuildResult:
    """Build ``options.target`` (default: the last stage) into an OCI layout at ``output``."""
    say = report or (lambda _message: None)
    if options.compression not in COMPRESSIONS:
        raise BuildError(f"unknown layer compression {options.compression!r}: gzip, zstd or none")
    context = options.context
    if not context.is_dir():
        raise BuildError(f"build context {context} is not a directory")
    path = find_packerfile(context, options.packerfile)
    build_plan = plan(load(path), build_args=options.build_args, target=options.target)
    store = ContentStore(cache_root() / "build")
    try:
        builder = _Builder(options, store, say)
        state = builder.run(build_plan)
        return builder.write(build_plan, state)
    finally:
        store.save()


class _Builder:
    def __init__(self, options: BuildOptions, store: ContentStore, say: Callable[[str], None]):
        self.options = options
        self.store = store
        self.say = say
        self.cache = StepCache(store, disabled=options.no_cache)
        self.images = BaseImages(store, options.context)
        self.states: dict[int, StageState] = {}
        self.context = DirectorySource(
            "the build context", options.context, store, load_ignore(options.context)
        )
        self.named: dict[str, Source] = {
            name: DirectorySource(
                f"build context {name!r}", Path(directory), store, load_ignore(directory)
            )
            for name, directory in options.contexts.items()
        }
        self.used_llama_cpp = False
        self.layers = Layers(store, options.compression)

    def run(self, build_plan: BuildPlan) -> StageState:
        state = StageState()
        in_image = _image_stages(build_plan)
        for stage in build_plan.stages:
            self.say(f"stage {stage.display_name}: FROM {stage.base}")
            state = self._base(stage.base_ref, stage.from_.location)
            steps = Steps(
                store=self.store,
                cache=self.cache,
                source_for=self._sources_of(stage.index),
                report=self.say,
                # A stage whose layers go into the image writes a new file's layer as it
                # hashes it; another stage's files are only hashed.
                layers=self.layers if stage.index in in_image else None,
            )
            for inst in stage.instructions:
                state = steps.run(inst, state)
            self.states[stage.index] = state
        self.used_llama_cpp = _ran_tools(build_plan)
        return state

    def _base(self, ref: StageRef | None, where: Location) -> StageState:
        if ref is None or ref.kind == "scratch":
            return StageState()
        if ref.kind == "stage" and ref.index is not None:
            return self.states[ref.index].copy()
        return self.images.state(ref.name, where)

    def _sources_of(self, index: int) -> Callable[[StageRef, StageState, Location], Source]:
        def source_for(ref: StageRef, current: StageState, where: Location) -> Source:
            return self._source(ref, current, where, index)

        return source_for

    def _source(self, ref: StageRef, current: StageState, where: Location, index: int) -> Source:
        if ref.kind == "stage":
            if ref.index is None or ref.index == index:
                return TreeSource("this stage", current.tree)
            return TreeSource(f"stage {ref.name}", self.states[ref.index].tree)
        if ref.kind == "context":
            return self.context
        if ref.kind == "scratch":
            return TreeSource("scratch", Tree())
        if ref.name in self.named:
            return self.named[ref.name]
        return TreeSource(ref.name, self.images.state(ref.name, where).tree)

    # --- the image ----------------------------------------------------------------------------

    def write(self, build_plan: BuildPlan, state: StageState) -> BuildResult:
        cmd = list(state.cmd) if state.cmd is not None else None
        where = build_plan.target.location
        if not cmd:
            raise BuildError("the image has no CMD: it must name the main model with -m", where)
        cmd_location = _cmd_location(build_plan) or where
        entries = self._roles(cmd, state.tree, cmd_location)
        model = entries.get("model")
        if model is None:
            raise BuildError("CMD must point out the main model with -m/--model", cmd_location)
        created = _created(self.options.context)
        labels = derived_labels(
            model[0][0],
            state.labels,
            created,
            state.base_name,
            state.base_digest,
        )
        if self.used_llama_cpp:
            labels[LLAMA_CPP_LABEL] = llama_cpp_build().label
        labels.update(self.options.labels)
        labels = dict(sorted(labels.items()))
        size = sum(size for role in entries.values() for _entry, size in role)
        config_object = seed_config(
            model[0][0],
            _first(entries.get("drafter")),
            _first(entries.get("projector")),
            [entry for entry, _size in entries.get("adapter", [])],
            cmd,
            labels,
            size,
        )
        layers = [self._layer(layer) for layer in state.layers]
        history = [
            HistoryEntry(h.created_by, h.comment, h.empty_layer, h.created or created)
            for h in state.history
        ]
        config = image_config(
            config_object, [layer.diff_id for layer, _ in layers], history, created
        )
        with LayoutWriter(self.options.output) as writer:
            for layer, blob in layers:
                writer.add_stored_blob(blob, layer.descriptor)
            manifest = writer.add_image(config, [layer for layer, _blob in layers])
            writer.tag(manifest, self.options.tag)
        # A split model's other shards too (by name: -00002-of-00003.gguf beside the first), so
        # that every later stage links them from the store rather than extracting a copy.
        files = {
            path: self.store.path(state.tree[clean_path(path)].digest)
            for role in cmd_roles(cmd)
            for path in shard_names(role.path)
            if clean_path(path) in state.tree
        }
        return BuildResult(
            self.options.output,
            self.options.tag,
            manifest,
            config,
            files,
            self.cache.hits,
            self.cache.misses,
        )

    def _roles(
        self, cmd: list[str], tree: Tree, where: Location
    ) -> dict[str, list[tuple[dict[str, Any], int]]]:
        entries: dict[str, list[tuple[dict[str, Any], int]]] = {}
        for role in cmd_roles(cmd):
            path = clean_path(role.path)
            if path not in tree:
                raise BuildError(
                    f"CMD names {role.path} ({role.flag}), which is not in the image", where
                )
            # A split model's entry is all its shards' (the seed's parser reads them all); each
            # must be in the image, or llama.cpp could not load it.
            shards = shard_names(role.path)
            lost = [p for p in shards[1:] if clean_path(p) not in tree]
            if lost:
                raise BuildError(
                    f"CMD names {role.path}, shard 1 of {len(shards)}, but {lost[0]} is not in"
                    " the image: COPY every shard",
                    where,
                )
            nodes = [tree[clean_path(p)] for p in shards]
            headers = [read_header(self.store.path(n.digest)) for n in nodes]
            entry = gguf_entry(headers, role.path, role.index)
            entries.setdefault(role.kind, []).append((entry, sum(n.size for n in nodes)))
        return entries

    def _layer(self, layer: Change | BaseLayer) -> tuple[Layer, Path]:
        if isinstance(layer, BaseLayer):
            return Layer(layer.descriptor, layer.diff_id, 0), layer.blob
        return self.layers.layer(layer.files)


def _image_stages(build_plan: BuildPlan) -> set[int]:
    """The stages whose layers are the image's: the target and its FROM chain."""
    stages = {stage.index: stage for stage in build_plan.stages}
    chain: set[int] = set()
    stage = build_plan.target
    while True:
        chain.add(stage.index)
        ref = stage.base_ref
        if ref is None or ref.kind != "stage" or ref.index is None or ref.index not in stages:
            return chain
        stage = stages[ref.index]


def _first(entries: list[tuple[dict[str, Any], int]] | None) -> dict[str, Any] | None:
    return entries[0][0] if entries else None


def _ran_tools(build_plan: BuildPlan) -> bool:
    """Whether llama.cpp made this image's files (CONVERT or QUANTIZE in the lineage)."""
    return any(isinstance(i, Convert | Quantize) for s in build_plan.stages for i in s.instructions)


def _cmd_location(build_plan: BuildPlan) -> Location | None:
    cmd: Cmd | None = build_plan.cmd
    return cmd.location if cmd is not None else None


def _created(context: Path) -> datetime:
    """When the image was made, reproducibly: SOURCE_DATE_EPOCH when set, else the time of the
    last commit that touched the build context (so ``list`` shows a real date and a rebuild of
    the same commit the same digest), else the epoch for a context outside git."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return datetime.fromtimestamp(default_mtime(), tz=timezone.utc)
    try:
        done = subprocess.run(
            ["git", "-C", str(context), "log", "-1", "--format=%ct", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        done = None
    seconds = done.stdout.strip() if done is not None and done.returncode == 0 else ""
    return datetime.fromtimestamp(int(seconds) if seconds.isdigit() else 0, tz=timezone.utc)
