"""Resolving FROM bases and ``--from`` values to stages, the context, scratch or images.

Apart from the planner because parse() resolves the literal values already (a ``--from``
naming a later stage is wrong whatever the build args), and plan() the expanded ones.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from harness.errors import Location
from harness.packerfile._problems import Sink
from harness.packerfile._records import Stage, StageRef
from harness.packerfile._sources import is_image_reference

__all__ = ["Resolver"]

_INDEX = re.compile(r"^[+-]?\d+$")


class Resolver:
    """Resolves FROM bases and ``--from`` values against a file's stages."""

    def __init__(self, stages: Sequence[Stage], sink: Sink) -> None:
        self.stages = stages
        self.sink = sink
        self.by_name: dict[str, Stage] = {}
        for stage in stages:
            if stage.name and stage.name not in self.by_name:
                self.by_name[stage.name] = stage

    def _earlier(
        self, target: Stage, current: Stage, keyword: str, value: str, where: Location
    ) -> StageRef | None:
        if target.index == current.index:
            self.sink.error(
                f"circular dependency: {keyword} --from={value} names the stage it is in "
                f"({current.display_name})",
                where,
                "circular",
            )
            return None
        if target.index > current.index:
            self.sink.error(
                f"cannot use stage {target.display_name!r} in {keyword} --from: it needs to be "
                f"defined before the current stage {current.display_name!r} "
                f"(it is defined at line {target.location.line})",
                where,
                "from-later",
            )
            return None
        return StageRef("stage", target.display_name, target.index)

    def resolve_from(
        self, value: str, current: Stage, keyword: str, where: Location
    ) -> StageRef | None:
        """A number is a stage index, then a stage name, then ``context``, else an image."""
        if _INDEX.match(value):
            index = int(value)
            if not 0 <= index < len(self.stages):
                count = len(self.stages)
                self.sink.error(
                    f"invalid stage index {index} in {keyword} --from: the file has {count} "
                    f"stage{'s' if count != 1 else ''} (0 to {count - 1})",
                    where,
                    "stage-index",
                )
                return None
            return self._earlier(self.stages[index], current, keyword, value, where)
        named = self.by_name.get(value.lower())
        if named is not None:
            return self._earlier(named, current, keyword, value, where)
        if value == "context":
            return StageRef("context", "context")
        if value.lower() == "scratch":
            return StageRef("scratch", "scratch")
        if not is_image_reference(value):
            self.sink.error(
                f"{keyword} --from={value!r} names no stage and is not a valid image reference",
                where,
                "image-ref",
            )
            return None
        # A bare name close to a stage's is likely a typo; "org/image:tag" is surely an image.
        bare = not any(c in value for c in "/:@")
        close = difflib.get_close_matches(value.lower(), list(self.by_name), n=1, cutoff=0.6)
        if bare and close:
            self.sink.warn(
                f"{keyword} --from={value} is read as an image; did you mean stage {close[0]!r}?",
                where,
                "from-image",
            )
        return StageRef("image", value)

    def resolve_base(self, value: str, current: Stage, where: Location) -> StageRef | None:
        """An earlier stage's name, then ``scratch``, else an image."""
        if not value:
            self.sink.error(
                "FROM needs a base: an image, an earlier stage's name or scratch "
                f"(base name {current.from_.image!r} is blank)",
                where,
                "base-blank",
            )
            return None
        if value.lower() == "scratch":
            return StageRef("scratch", "scratch")
        named = self.by_name.get(value.lower())
        if named is not None and named.index < current.index:
            return StageRef("stage", named.display_name, named.index)
        if named is not None and named.index > current.index:
            self.sink.error(
                f"FROM {value}: stage {named.display_name!r} is defined later (line "
                f"{named.location.line}); a stage can only build on stages defined before it",
                where,
                "from-later",
            )
            return None
        # FROM x AS x reads x as an image, as in Docker.
        if not is_image_reference(value):
            self.sink.error(f"FROM {value!r}: invalid image reference", where, "image-ref")
            return None
        return StageRef("image", value)
