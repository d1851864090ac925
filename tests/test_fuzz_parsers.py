"""Hostile input for every parser of what others wrote: accepted, or refused with the project's
own error as one line pointing into the input; quickly, and writing nothing.

The generators and the checks live in benchmarks/fuzz_parsers.py, which runs 10,000 cases per
parser; here each parser gets a few hundred seeded cases, and every input under
tests/data/fuzz/<parser>/ (each once crashed a parser, hung it or made it print a page) must be
refused properly.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from benchmarks.fuzz_parsers import FUZZ, PARSERS, message_problem, run, snapshot, write_case
from harness.errors import Location, OCIError
from harness.oci._media import MAX_LABEL_BYTES, MAX_LABELS, check_labels

CASES = 300

# Found by these tests, to be fixed outside the files this suite's author owns; each entry goes
# when its fix lands (the xfails are strict, so a fixed one fails until it is removed here).
_LAYOUT = (
    "harness/oci/_layout.py: _load_json must turn the ValueError of an integer past Python's"
    " 4300 digits into an OCIError at the file, and its messages quote values with"
    " harness.oci._media.shown (imageLayoutVersion, manifest mediaType, descriptor size)"
)
_SEED_READ = (
    "harness/oci/_seed_read.py: _decode must also catch ValueError (an integer past 4300"
    " digits) and RecursionError (nesting), and _uint quote with harness.oci._media.shown"
)
PENDING_FILES: dict[str, str] = {}
PENDING_CASES: dict[str, tuple[re.Pattern[str], str]] = {}


@pytest.mark.parametrize("name", list(PARSERS))
def test_seeded_mutations_are_accepted_or_one_located_error(name: str, tmp_path: Path) -> None:
    parser = PARSERS[name]
    failures, pending = [], []
    known, reason = PENDING_CASES.get(name, (None, ""))
    for number in range(CASES):
        path = write_case(parser, 0, number, tmp_path)
        problem = run(parser, path, tmp_path / "work").problem
        if problem is not None:
            is_pending = known is not None and known.search(problem)
            (pending if is_pending else failures).append(f"case {number}: {problem}")
    rerun = f"python benchmarks/fuzz_parsers.py --parser {name} --case N"
    assert not failures, "\n".join([*failures[:10], f"({rerun} shows one)"])
    if pending:
        pytest.xfail(f"{len(pending)} cases wait for: {reason}")


def _regressions() -> list[object]:
    inputs = sorted(path for path in FUZZ.glob("*/*") if path.is_file())
    return [
        pytest.param(
            path,
            id=f"{path.parent.name}/{path.name}",
            marks=[pytest.mark.xfail(strict=True, reason=PENDING_FILES[key])]
            if (key := f"{path.parent.name}/{path.name}") in PENDING_FILES
            else [],
        )
        for path in inputs
    ]


@pytest.mark.parametrize("path", _regressions())
def test_regression_input_is_one_located_error(path: Path, tmp_path: Path) -> None:
    parser = PARSERS[path.parent.name]
    call = parser.prepare(path, tmp_path)
    before = snapshot(path.parent), snapshot(tmp_path)
    began = time.perf_counter()
    with pytest.raises(parser.error) as caught:
        call()
    assert time.perf_counter() - began < 2.0
    assert message_problem(parser, caught.value, path, tmp_path) is None, str(caught.value)
    assert (snapshot(path.parent), snapshot(tmp_path)) == before


def test_regression_inputs_belong_to_a_parser() -> None:
    folders = {path.parent.name for path in FUZZ.glob("*/*")}
    assert folders == set(PARSERS)
    assert set(PENDING_FILES) <= {f"{p.parent.name}/{p.name}" for p in FUZZ.glob("*/*")}


# --- labels and annotations of hostile size ---------------------------------------------------


def test_labels_within_bounds_are_returned() -> None:
    labels = {"org.opencontainers.image.title": "SmolLM2", "gguf.model.filetype": "Q4_1"}
    assert check_labels(labels, "config.Labels") == labels
    assert check_labels({}, "annotations") == {}


@pytest.mark.parametrize(
    ("labels", "key", "message"),
    [
        ({"a": "x" * (4 << 20)}, "config.Labels['a']", "a value of 4194304 bytes, over the 65536"),
        ({"é" * 40_000: "v"}, "config.Labels['éééé", "a key of 80000 bytes, over the 65536"),
        ({f"k{i}": "v" for i in range(100_000)}, "config.Labels", "100000 entries, over the"),
        ({"a": 1}, "config.Labels['a']", "not a string: 1"),
        (["a"], "config.Labels", "not a string-to-string object: a list of 1 items"),
    ],
)
def test_labels_of_hostile_size_are_one_located_error(
    labels: object, key: str, message: str
) -> None:
    began = time.perf_counter()
    with pytest.raises(OCIError) as caught:
        check_labels(labels, "config.Labels", Location("blobs/sha256/abc"))
    assert time.perf_counter() - began < 1.0
    text = str(caught.value)
    assert text.startswith(f"blobs/sha256/abc: {key}") and message in text, text
    assert "\n" not in text and len(text) < 300
    assert (MAX_LABELS, MAX_LABEL_BYTES) == (4096, 64 << 10)


# --- the same hostile tar on every path that reads one -------------------------------------------

_SPARSE = FUZZ / "tar" / "sparse-member-of-10e30-bytes.tar"


def test_a_sparse_member_is_refused_at_once_by_a_pull(tmp_path: Path) -> None:
    """6.5 KB claiming a sparse file of 10**30 bytes: Python's reader would fill it with zeros
    forever. The store refuses it before writing a byte."""
    import hashlib

    from harness.errors import UnsafeLayerError
    from harness.oci import Descriptor
    from harness.store._unpack import UnpackLimits, unpack_layer

    data = _SPARSE.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar", digest, len(data))
    began = time.perf_counter()
    with pytest.raises(UnsafeLayerError, match="is a sparse file: refused"):
        unpack_layer(_SPARSE, descriptor, digest, tmp_path / "layer", UnpackLimits())
    assert time.perf_counter() - began < 2.0
    assert not (tmp_path / "layer").exists() or not any((tmp_path / "layer").rglob("prompt*"))


def test_a_sparse_member_is_refused_at_once_by_add(tmp_path: Path) -> None:
    import shutil

    from harness.builder import BuildOptions, build
    from harness.errors import BuildError

    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(_SPARSE, context / "layer.tar")
    (context / "GGUFPackerfile").write_text("FROM scratch\nADD layer.tar /x/\n")
    began = time.perf_counter()
    with pytest.raises(BuildError, match=r"GGUFPackerfile:2:.*is a sparse file: refused"):
        build(BuildOptions(context, tmp_path / "out"))
    assert time.perf_counter() - began < 5.0
    assert not (tmp_path / "out").exists()
