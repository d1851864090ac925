"""Seeded mutation fuzzing of every parser of what others wrote; run it and read the figures.

    python benchmarks/fuzz_parsers.py [--cases 10000] [--seed 0] [--parser yaml ...]
    python benchmarks/fuzz_parsers.py --parser tar --case 123   # one case, with its traceback

Parsers: model.yaml (``load_spec``), an OCI layout's index, manifest and image config
(``read_layout``), a seed image config (``parse_seed_config``), a layer's tar (``iter_layer``)
and llama-server's argv (``parse_server_args``). Every case is a mutation of the repository's own
files (models/*/model.yaml, tests/data/specs, the seed's image config, the layers the harness
writes, the models' CMDs); the parser must accept it or raise the project's error as one line
that points into the input, writing nothing. Anything else is a failure: an exception of another
class, a traceback, a message without a location or of more than 4 KiB. Case N of a seed is the
same input on every run. Per parser it prints the cases, the failures (first few, by case
number), the worst time of one case and the peak Python memory of one case (tracemalloc, which
also slows every case down about twofold).

tests/test_fuzz_parsers.py runs a few hundred cases of each and every input under
tests/data/fuzz/<parser>/ (each once crashed a parser).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import io
import json
import random
import re
import shutil
import sys
import tarfile
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import zstandard

from harness.errors import HarnessError, OCIError, SpecError, SpecErrors
from harness.expect import load_schema, load_spec
from harness.gguf import read_header
from harness.oci import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    LayerEntry,
    canonical_json,
    gguf_entry,
    image_config,
    parse_seed_config,
    read_layout,
    seed_config,
    write_layer,
)
from harness.oci._tarread import iter_layer
from harness.toolchain import ServerArgsError, parse_server_args
from harness.toolchain._server_options import OPTIONS
from tests.gguf_files import write_fuzz_seed

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "tests" / "data" / "fuzz"
#: A refusal is one line a person reads: longer means it quotes the hostile input whole.
MAX_MESSAGE = 4096


@dataclass(frozen=True)
class Parser:
    """A parser under fuzz: ``generate`` makes (file name, bytes) from a seeded random source;
    ``prepare`` sets up what the parser reads from that file in ``work`` and returns the call."""

    name: str
    error: type[HarnessError]
    generate: Callable[[random.Random], tuple[str, bytes]]
    prepare: Callable[[Path, Path], Callable[[], object]]
    located: Callable[[HarnessError, Path, Path], bool]  # (error, input, work)


def case_random(parser: str, seed: int, number: int) -> random.Random:
    """Case ``number`` alone is reproducible: its source depends on nothing else."""
    return random.Random(f"{seed}:{parser}:{number}")


class Result(NamedTuple):
    problem: str | None  # None: accepted, or refused as it should be
    refused: bool
    seconds: float  # the parser's call alone
    peak: int  # bytes the call allocated at most (tracemalloc), when tracing; else 0


def run(parser: Parser, path: Path, work: Path) -> Result:
    """Feed ``path`` to ``parser``: what went wrong, if anything, and how long it took."""
    call = parser.prepare(path, work)
    before = snapshot(path.parent), snapshot(work)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]  # (0, 0) when not tracing
    began = time.perf_counter()
    problem, refused = None, False
    try:
        call()
    except parser.error as error:
        problem, refused = message_problem(parser, error, path, work), True
    except Exception as error:  # what this file exists to find
        problem = f"crash: {type(error).__name__}: {str(error)[:200]!r}"
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1] - base
    if problem is None and (snapshot(path.parent), snapshot(work)) != before:
        problem = "wrote to the input's folder"
    return Result(problem, refused, seconds, peak)


def message_problem(parser: Parser, error: HarnessError, path: Path, work: Path) -> str | None:
    text = str(error)
    problems = error.problems if isinstance(error, SpecErrors) else (error,)
    if "Traceback" in text or len(text.split("\n")) != len(problems):
        return f"not one line per problem: {text[:200]!r}"
    if any(len(str(problem)) > MAX_MESSAGE for problem in problems):
        return f"a message of {len(text)} characters"
    if not all(parser.located(problem, path, work) for problem in problems):
        return f"no location in the input: {text[:200]!r}"
    return None


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _at_file(error: HarnessError, path: Path) -> bool:
    return error.location is not None and error.location.path == str(path)


# --- mutations shared by the parsers --------------------------------------------------------------


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    at = rng.randrange(len(out) + 1)
    kind = rng.choice(["flip", "insert", "delete", "truncate", "append"])
    if kind == "flip" and at < len(out):
        out[at] ^= 1 << rng.randrange(8)
    elif kind == "insert":
        out[at:at] = rng.choice([b"\0", b"\xff", b"\xc3", b"\n", b"{", b"[", rng.randbytes(4)])
    elif kind == "delete":
        del out[at : at + rng.randint(1, 16)]
    elif kind == "truncate":
        del out[at:]
    else:
        out += rng.choice([b"\0" * 512, b"junk", rng.randbytes(rng.randint(1, 600))])
    return bytes(out)


_RAW = object()  # stands for a raw JSON text spliced in after encoding
_JSON_RAW = [
    "9" * 5000,  # past Python's 4300-digit int limit
    "-" + "9" * 400,
    "1e99999",
    "NaN",
    "-Infinity",
    "[" * 100_000 + "]" * 100_000,  # past Python's stack
    '{"a": ' * 5000 + "1" + "}" * 5000,
    '"\\ud800"',
    '"\\u0000\\u001b[2J"',
    '{"a": 1, "a": [2]}',
]
_JSON_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63, 2**64 + 1, 1.5, float("nan"), "", "x", "x" * 70_000,
    [], {}, [1, "a", None], {"a": "b"}, {"a": {"b": {"c": []}}},
    "sha256:" + "0" * 64, "sha256:../../../../etc/passwd", "sha512:" + "a" * 128, "md5:00",
    OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP, DOCKER_MANIFEST,
    {REF_NAME: 5}, {REF_NAME: "latest"}, {"os": 1, "architecture": []}, "\x1b]0;pwned\x07",
]  # fmt: skip
_JSON_KEYS = [
    "mediaType", "digest", "size", "annotations", "platform", "manifests", "config", "layers",
    "schemaVersion", "artifactType", "Labels", "Cmd", "Model", "Drafter", "Adapters", "GGUF",
    "header", "metadataKV", "tensorInfos", "rootfs", "diff_ids", "imageLayoutVersion", "",
]  # fmt: skip


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _nodes(item, (*path, key))


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def mutate_json(rng: random.Random, base: bytes) -> bytes:
    """1 to 3 changes to the document's structure, sometimes then to its bytes."""
    doc = json.loads(base)
    raw = rng.choice(_JSON_RAW)
    for _ in range(rng.randint(1, 3)):
        paths = list(_nodes(doc))
        path = rng.choice(paths)
        kind = rng.choice(["replace", "replace", "delete", "add", "raw", "many"])
        # a copy: a later change may land inside the value, which must not leak to other cases
        new: Any = _RAW if kind == "raw" else copy.deepcopy(rng.choice(_JSON_VALUES))
        if kind == "many":  # a hostile count of entries
            new = {f"k{i}": "v" for i in range(rng.choice([100, 5000]))}
        if not path:
            doc = new if kind != "delete" else {}
            continue
        parent = _at(doc, path[:-1])
        if kind == "delete":
            del parent[path[-1]]
        elif kind == "add" and isinstance(parent, dict):
            parent[rng.choice(_JSON_KEYS)] = new
        elif kind == "add":
            parent.insert(path[-1], new)
        else:
            parent[path[-1]] = new
    text = json.dumps(doc, default=str).replace(json.dumps(str(_RAW)), raw)
    data = text.encode("utf-8", "surrogatepass")
    return mutate_bytes(rng, data) if rng.random() < 0.25 else data


# --- model.yaml -----------------------------------------------------------------------------------

YAML_SEEDS = [
    *sorted(ROOT.glob("models/*/model.yaml")),
    *sorted((ROOT / "tests" / "data" / "specs").glob("*.yaml")),
]
_ENTRY = re.compile(r"^(\s*(?:-\s+)?)([^\s:#'\"{[][^:#]*):(?:\s+(.*))?$")
_YAML_VALUES = [
    "!!int abc", "!!float x", "!!bool maybe", "!!timestamp 2024-13-45", "!!binary '@@'",
    "!!python/object:os.system x", "!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1]", "!x y",
    "!!str", "!!map [a]", "!!seq {a: 1}", "[chat]", "{}", "[]", "1", "-1", "0", "null", "true",
    "1.5", ".nan", ".inf", "-.inf", "1e400", "''", '"\\0"', '"\\ud800"', '"\\x1b[2J"', "9" * 5000,
    "0x" + "f" * 5000, "0o" + "7" * 5000, "'" + "x" * 70_000 + "'", "'a{99999999999}'",
    "'(?P<'", "'[z-a]'", "*undefined", "&a x", "*a", "|\n  text", "'${X'", "'${1}'", "10 %",
    "100%", "0B", "9" * 400 + "MiB", "9" * 400 + "%", "'" + "9" * 5000 + "'", "[" * 3000,
    "[" * 3000 + "]" * 3000, "{a: " * 400 + "1" + "}" * 400, "\0", "\x1b[2J", "\ufeff", "\u202e",
    "[-c, '8192', --threads]", "['" + "-" * 3 + "x" * 70_000 + "']", "['-m', 'a\\0b']",
]  # fmt: skip
_YAML_KEYS = ["? [a]", "1", "<<", "''", '"a\\nb"', "x" * 5000, "&k k", "*k", "!!int k", "-"]


@cache
def _yaml_seeds() -> list[list[str]]:
    return [path.read_text("utf-8").splitlines() for path in YAML_SEEDS]


@cache
def _schema_keys() -> list[str]:
    keys: set[str] = set()
    for path in _nodes(load_schema()):
        if len(path) >= 2 and path[-2] == "properties":
            keys.add(str(path[-1]))
    return sorted(keys)


def _entries(lines: list[str]) -> list[int]:
    return [n for n, line in enumerate(lines) if _ENTRY.match(line)] or [0]


def _yaml_value(rng: random.Random, lines: list[str]) -> None:
    n = rng.choice(_entries(lines))
    match = _ENTRY.match(lines[n]) if lines else None
    head = f"{match.group(1)}{match.group(2)}: " if match else "a: "
    lines[n : n + 1] = (head + rng.choice(_YAML_VALUES)).split("\n")


def _yaml_key(rng: random.Random, lines: list[str]) -> None:
    n = rng.choice(_entries(lines))
    match = _ENTRY.match(lines[n]) if lines else None
    if match:
        key = rng.choice(_schema_keys() + _YAML_KEYS)
        lines[n] = f"{match.group(1)}{key}: {match.group(3) or ''}"


def _yaml_lines(rng: random.Random, lines: list[str]) -> None:
    if not lines:
        return
    n, m = rng.randrange(len(lines)), rng.randrange(len(lines))
    kind = rng.choice(["dup", "delete", "swap", "indent", "splice"])
    if kind == "dup":
        lines.insert(n, lines[n])
    elif kind == "delete":
        del lines[n]
    elif kind == "swap":
        lines[n], lines[m] = lines[m], lines[n]
    elif kind == "indent":
        lines[n] = rng.choice(["  ", "\t", " "]) + lines[n] if rng.random() < 0.5 else lines[n][2:]
    else:
        other = rng.choice(_yaml_seeds())
        start = rng.randrange(len(other))
        lines[n:n] = other[start : start + rng.randint(1, 8)]


def _yaml_alias(rng: random.Random, lines: list[str]) -> None:
    entries = _entries(lines)
    first, second = rng.choice(entries), rng.choice(entries)
    for n, prefix in ((first, "&a "), (second, "*a")):
        match = _ENTRY.match(lines[n]) if lines else None
        if match:
            value = match.group(3) or ""
            text = prefix + value if prefix == "&a " else prefix
            lines[n] = f"{match.group(1)}{match.group(2)}: {text}"
    if rng.random() < 0.3:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(["<<: *a", "  <<: *a", "<<: 1"]))


def _yaml_nest(rng: random.Random, lines: list[str]) -> None:
    depth = rng.choice([50, 500, 3000])
    n = rng.randrange(len(lines) + 1)
    lines[n:n] = (
        [" " * i + "a:" for i in range(depth)] if depth < 600 else [rng.choice(_YAML_VALUES)]
    )


def yaml_case(rng: random.Random) -> tuple[str, bytes]:
    lines = list(rng.choice(_yaml_seeds()))
    mutations = [_yaml_value, _yaml_value, _yaml_key, _yaml_lines, _yaml_alias, _yaml_nest]
    for _ in range(rng.randint(1, 3)):
        rng.choice(mutations)(rng, lines)
    data = "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n"
    return "model.yaml", mutate_bytes(rng, data) if rng.random() < 0.1 else data


def _yaml_located(error: HarnessError, path: Path, work: Path) -> bool:
    return _at_file(error, path) and error.location is not None and error.location.line is not None


YAML = Parser(
    "yaml", SpecError, yaml_case, lambda path, work: lambda: load_spec(path), _yaml_located
)


# --- image configs and OCI layouts ----------------------------------------------------------------


@cache
def seed_image_config() -> bytes:
    """The image config the seed writes for tests/gguf_files.py's fuzz GGUF."""
    with tempfile.TemporaryDirectory() as folder:
        header = read_header(write_fuzz_seed(Path(folder) / "fuzz.gguf"))
    entry = gguf_entry(header, "fuzz.gguf", 1)
    labels = {"org.opencontainers.image.title": "fuzz", "gguf.model.architecture": "llama"}
    config = seed_config(entry, cmd=["-m", "fuzz.gguf", "-c", "512"], labels=labels)
    return canonical_json(image_config(config, [], [], "2024-01-01T00:00:00Z"))


_TARGETS = ("index", "nested", "manifest", "config", "oci-layout")


def layout_files(target: str, data: bytes | None = None) -> dict[str, bytes]:
    """A small layout's files with ``data`` as its ``target`` file (the nested index exists only
    when that is the target); every file above it is re-pointed at it by digest and size, so
    that reading reaches the mutated bytes."""
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}

    def pick(name: str, base: bytes) -> bytes:
        return data if name == target and data is not None else base

    def blob(raw: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        files[f"blobs/sha256/{digest[7:]}"] = raw
        return {"mediaType": media_type, "digest": digest, "size": len(raw), **extra}

    config = blob(pick("config", seed_image_config()), OCI_CONFIG)
    layer = blob(gzip.compress(_tar_seeds()[0], mtime=0), OCI_LAYER_GZIP)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config}
    manifest |= {"layers": [layer], "annotations": {"org.opencontainers.image.title": "fuzz"}}
    tag = {"annotations": {REF_NAME: "latest"}}
    listed = blob(pick("manifest", canonical_json(manifest)), OCI_MANIFEST, **tag)
    if target == "nested":
        platforms = [("linux", "amd64"), ("linux", "arm64"), ("unknown", "unknown")]
        entries = [{**listed, "platform": {"os": o, "architecture": a}} for o, a in platforms]
        nested = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        listed = blob(pick("nested", canonical_json(nested)), OCI_INDEX, **tag)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [listed]}
    files["index.json"] = pick("index", canonical_json(index))
    files["oci-layout"] = pick("oci-layout", files["oci-layout"])
    return files


@cache
def _base_file(target: str) -> bytes:
    files = layout_files(target)
    if target == "config":
        return seed_image_config()
    if target in ("index", "oci-layout"):
        return files["index.json" if target == "index" else "oci-layout"]
    digest: str = json.loads(files["index.json"])["manifests"][0]["digest"]
    return files[f"blobs/sha256/{digest[7:]}"]  # the manifest, or the nested index


def oci_case(rng: random.Random) -> tuple[str, bytes]:
    target = rng.choice(_TARGETS)
    return f"{target}-case.json", mutate_json(rng, _base_file(target))


def _oci_prepare(path: Path, work: Path) -> Callable[[], object]:
    target = next(t for t in _TARGETS if path.name.startswith(t + "-"))
    for name, data in layout_files(target, path.read_bytes()).items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)

    def call() -> object:
        image = read_layout(work, "latest")
        return image.labels, image.diff_ids

    return call


def _oci_located(error: HarnessError, path: Path, work: Path) -> bool:
    where = error.location.path if error.location is not None else None
    return where is not None and Path(where).is_relative_to(work)


OCI = Parser("oci", OCIError, oci_case, _oci_prepare, _oci_located)


def seed_case(rng: random.Random) -> tuple[str, bytes]:
    return "config.json", mutate_json(rng, seed_image_config())


def _seed_prepare(path: Path, work: Path) -> Callable[[], object]:
    def call() -> object:
        parsed = parse_seed_config(path.read_bytes(), source=str(path))
        return parsed.model.derived_file_type  # what `inspect` shows of a seed image

    return call


SEED = Parser("seed", OCIError, seed_case, _seed_prepare, lambda e, p, w: _at_file(e, p))


# --- layer tars -----------------------------------------------------------------------------------

_MEDIA = {".tar": OCI_LAYER, ".gz": OCI_LAYER_GZIP, ".zst": OCI_LAYER_ZSTD}
_NUMERIC = [(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (329, 8), (337, 8)]
_TEXT = [(0, 100), (157, 100), (345, 155), (257, 8), (265, 32)]
_NUMBERS = [
    b"77777777777", b"-1", b"\x80" + b"\xff" * 11, b"\xff" * 12, b"abc", b" " * 12, b"\0" * 12,
    b"0", b"1" * 12, b"\x80\0\0\0\0\0\0\x01\0\0\0\0", b"0000001000\0",
]  # fmt: skip
_TEXTS = [b"../../etc/passwd", b"/abs", b"\xff\xfe", b"a" * 155, b"\0", b"x/" * 50, b"ustar  \0"]
_TYPES = list(b"0123456789gxLKSVMDNZ\0A")
_PAX = [
    ("path", "a" * 300), ("size", "-1"), ("size", "9" * 30), ("size", "abc"), ("mtime", "nan"),
    ("mtime", "1e999"), ("uid", "-5"), ("linkpath", "../../x"), ("GNU.sparse.map", "1,2,x"),
    ("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.size", "99"),
    ("GNU.sparse.name", "x"), ("hdrcharset", "BINARY"), ("SCHILY.xattr.user.a", "\udcff"),
    ("path", "1" * 5000), ("comment", "1" * 20_000),
]  # fmt: skip
_PAX_RAW = [b"1" * 20_000, b"2 " * 5000 + b"=", b"99 path=a\n", b"0 a=b\n", b"3 =\n", b"x" * 600]


def _pax_record(key: str, value: str) -> bytes:
    payload = f" {key}={value}\n".encode("utf-8", "surrogateescape")
    length = len(payload) + len(str(len(payload)))
    length = len(payload) + len(str(length))
    return str(length).encode() + payload


@cache
def _tar_seeds() -> list[bytes]:
    """A layer as the harness writes it, then PAX and GNU tars with long names and links."""
    with tempfile.TemporaryDirectory() as folder:
        model = write_fuzz_seed(Path(folder) / "fuzz.gguf").read_bytes()
    out = io.BytesIO()
    entries = [LayerEntry("app/model.gguf", model), LayerEntry("app/prompt.txt", b"Be brief.\n")]
    write_layer([*entries, LayerEntry("app/empty", b"")], out, "none", mtime=0)
    seeds = [out.getvalue()]
    for form in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=form) as tar:
            for name, kind, data in [
                ("models", tarfile.DIRTYPE, b""),
                ("models/" + "d" * 120 + "/modèle.gguf", tarfile.REGTYPE, model[:2000]),
                ("models/link", tarfile.SYMTYPE, b""),
                ("models/hard", tarfile.LNKTYPE, b""),
            ]:
                info = tarfile.TarInfo(name)
                info.type, info.size, info.mtime = kind, len(data), 1_700_000_000
                info.linkname = "x" * 150 if kind != tarfile.REGTYPE else ""
                tar.addfile(info, io.BytesIO(data))
        seeds.append(out.getvalue())
    return seeds


def _headers(data: bytes) -> list[int]:
    found, at = [], 0
    while at + 512 <= len(data) and data[at : at + 512].strip(b"\0"):
        found.append(at)
        try:
            size = tarfile.nti(data[at + 124 : at + 136])
        except tarfile.HeaderError:
            break
        at += 512 + -(-size // 512) * 512
    return found or [0]


def _with_checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % (sum(header[:512]) & 0o777777)


def tar_case(rng: random.Random) -> tuple[str, bytes]:
    data = bytearray(rng.choice(_tar_seeds()))
    for _ in range(rng.randint(1, 3)):
        at = rng.choice(_headers(bytes(data)))
        kind = rng.choice(["field", "field", "type", "pax", "bytes"])
        header = data[at : at + 512].ljust(512, b"\0")
        if kind == "field":
            offset, size = rng.choice(_NUMERIC + _TEXT)
            value = rng.choice(_NUMBERS if (offset, size) in _NUMERIC else _TEXTS)
            header[offset : offset + size] = value[:size].ljust(size, b"\0")
        elif kind == "type":
            header[156] = rng.choice(_TYPES)
        if kind in ("field", "type"):
            if rng.random() < 0.8:  # past the checksum, or the tar reader never looks further
                _with_checksum(header)
            data[at : at + 512] = header
        elif kind == "pax":
            body = rng.choice(_PAX_RAW) if rng.random() < 0.3 else b""
            for key, value in rng.sample(_PAX, rng.randint(1, 3)) if not body else []:
                body += _pax_record(key, value)
            info = tarfile.TarInfo("././@PaxHeader")
            info.type, info.size = rng.choice([tarfile.XHDTYPE, tarfile.XGLTYPE]), len(body)
            padded = info.tobuf(tarfile.USTAR_FORMAT) + body + b"\0" * (-len(body) % 512)
            data[at:at] = padded
        else:
            data = bytearray(mutate_bytes(rng, bytes(data)))
    suffix = rng.choice([".tar", ".tar", ".gz", ".zst"])
    blob = bytes(data)
    if suffix == ".gz":
        blob = gzip.compress(blob, mtime=0)
    elif suffix == ".zst":
        blob = zstandard.ZstdCompressor().compress(blob)
    if suffix != ".tar" and rng.random() < 0.15:
        blob = mutate_bytes(rng, blob)
    return "layer" + (".tar" if suffix == ".tar" else ".tar" + suffix), blob


def _diff_id(blob: bytes, media_type: str) -> str | None:
    """The tar's digest when the blob decompresses (bounded): the check a config's diff_id adds."""
    try:
        if media_type == OCI_LAYER_GZIP:
            blob = _read_some(gzip.GzipFile(fileobj=io.BytesIO(blob)))
        elif media_type == OCI_LAYER_ZSTD:
            reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
            blob = _read_some(reader)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError):
        return None
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _read_some(stream: Any, most: int = 64 << 20) -> bytes:
    """Up to ``most`` bytes, a chunk at a time (read(n) allocates n bytes up front)."""
    chunks: list[bytes] = []
    while sum(map(len, chunks)) < most and (chunk := stream.read(1 << 20)):
        chunks.append(chunk)
    return b"".join(chunks)


def _tar_prepare(path: Path, work: Path) -> Callable[[], object]:
    blob = path.read_bytes()
    media_type = _MEDIA[path.suffix]
    descriptor = Descriptor(media_type, "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
    diff_id = _diff_id(blob, media_type)

    def call() -> object:
        for member, chunks in iter_layer(path, descriptor, diff_id):
            for _chunk in chunks() if member.isreg() else ():  # as harness.oci._extract reads
                pass
        return None

    return call


TAR = Parser("tar", OCIError, tar_case, _tar_prepare, lambda e, p, w: _at_file(e, p))


# --- llama-server's argv --------------------------------------------------------------------------

_ARGV_SEEDS = [
    ["-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "-c", "8192", "--system-prompt-file", "s"],
    ["-m", "all-MiniLM-L6-v2.Q8_0.gguf", "--embedding", "--pooling", "mean"],
    ["-c", "8192", "-fa", "off", "-np", "4", "--threads", "1", "--no-mmap"],
    ["--lora-scaled", "a.gguf:0.5", "--control-vector-layer-range", "1", "3", "-ngl", "all"],
]
_WORDS = [
    "", "-", "--", "--no-", "-m", "--model", "--ctx_size", "--ctx-size=4096", "-c=1", "\0",
    "-m\0", "a\0b", "x" * 70_000, "--" + "a" * 5000, "\udc80", "-\u202e", "1e999", "-1",
    "--LORA", "\u2014model", "--ctx-size\n", "-" * 40, "--" + "-" * 300,
]  # fmt: skip
_ENV_VALUES = ["1", "true", "off", "maybe", "", "\0", "x" * 70_000, "TRUE", "0x10"]


def argv_case(rng: random.Random) -> tuple[str, bytes]:
    argv = list(rng.choice(_ARGV_SEEDS))
    if rng.random() < 0.3:
        for opt in rng.sample(OPTIONS, rng.randint(1, 8)):
            name = rng.choice(opt.names + opt.negatives)
            argv += [name, *(["1"] * opt.arity if name in opt.names else [])]
    for _ in range(rng.randint(1, 3)):
        n = rng.randrange(len(argv) + 1)
        kind = rng.choice(["option", "word", "delete", "dup", "truncate", "join", "underscore"])
        if kind == "option":
            opt = rng.choice(OPTIONS)
            argv.insert(n, rng.choice(opt.names + opt.negatives))
        elif kind == "word":
            argv.insert(n, rng.choice(_WORDS))
        elif argv and n < len(argv) and kind in ("delete", "dup"):
            argv[n : n + 1] = [] if kind == "delete" else [argv[n]] * 2
        elif kind == "truncate":
            del argv[n:]
        elif n + 1 < len(argv) and kind == "join":
            argv[n : n + 2] = [f"{argv[n]}={argv[n + 1]}"]
        elif n < len(argv):
            argv[n] = argv[n].replace("-", "_")
    env = {}
    if rng.random() < 0.3:
        for opt in rng.sample([o for o in OPTIONS if o.env], rng.randint(1, 4)):
            env[str(opt.env)] = rng.choice(_ENV_VALUES)
    return "argv.json", json.dumps({"argv": argv, "env": env}).encode()


def _argv_prepare(path: Path, work: Path) -> Callable[[], object]:
    given = json.loads(path.read_bytes())
    return lambda: parse_server_args(given["argv"], given.get("env") or None)


def _argv_located(error: HarnessError, path: Path, work: Path) -> bool:
    argv = json.loads(path.read_bytes())["argv"]
    return isinstance(error, ServerArgsError) and -1 <= error.index < max(len(argv), 1)


ARGV = Parser("argv", ServerArgsError, argv_case, _argv_prepare, _argv_located)

PARSERS = {parser.name: parser for parser in (YAML, OCI, SEED, TAR, ARGV)}


def write_case(parser: Parser, seed: int, number: int, folder: Path) -> Path:
    """Case ``number`` of ``parser`` written under ``folder``/in, with ``folder``/work empty."""
    name, data = parser.generate(case_random(parser.name, seed, number))
    for sub in ("in", "work"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / sub).mkdir(parents=True)
    path = folder / "in" / name
    path.write_bytes(data)
    return path


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Tally:
    cases: int = 0
    refused: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    worst: tuple[float, int] = (0.0, -1)  # seconds, case
    slow: int = 0  # cases over a second: reported, not failed (times vary by machine)
    peak: tuple[int, int] = (0, -1)  # bytes, case


def fuzz(
    parser: Parser, seed: int, cases: int, folder: Path, save: Path | None, memory: bool
) -> Tally:
    """Every case twice: timed, then traced for memory (tracemalloc slows Python down, and
    pyyaml's character loop most: ten times)."""
    tally = Tally()
    for number in range(cases):
        path = write_case(parser, seed, number, folder)
        result = run(parser, path, folder / "work")
        tally.cases += 1
        tally.refused += result.refused
        tally.worst = max(tally.worst, (result.seconds, number))
        tally.slow += result.seconds > 1.0
        if memory:
            path = write_case(parser, seed, number, folder)
            tracemalloc.start()
            try:
                tally.peak = max(tally.peak, (run(parser, path, folder / "work").peak, number))
            finally:
                tracemalloc.stop()
        if result.problem is not None:
            tally.failures.append((number, result.problem))
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, save / f"{parser.name}-{number}-{path.name}")
    return tally


def show_case(parser: Parser, seed: int, number: int, folder: Path) -> None:
    """One case with the traceback of whatever it raises, for a person fixing it."""
    path = write_case(parser, seed, number, folder)
    print(f"{parser.name} case {number}: {path.name}, {path.stat().st_size} bytes")
    began = time.perf_counter()
    try:
        print("accepted:", repr(parser.prepare(path, folder / "work")())[:300])
    except parser.error as error:
        print(f"refused ({type(error).__name__}):", str(error)[:2000])
    finally:
        print(f"{time.perf_counter() - began:.3f} s")


def main() -> int:
    options = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    options.add_argument("--cases", type=int, default=10_000, help="cases per parser")
    options.add_argument("--seed", type=int, default=0)
    options.add_argument("--parser", choices=list(PARSERS), action="append", help="repeatable")
    options.add_argument("--case", type=int, help="run this one case and show what it raises")
    options.add_argument("--save", type=Path, help="copy every failing input into this folder")
    options.add_argument("--no-memory", action="store_true", help="skip the traced second run")
    args = options.parse_args()
    names = args.parser or list(PARSERS)
    failed = 0
    with tempfile.TemporaryDirectory() as folder:
        if args.case is not None:
            for name in names:
                show_case(PARSERS[name], args.seed, args.case, Path(folder))
            return 0
        for name in names:
            began = time.perf_counter()
            tally = fuzz(
                PARSERS[name], args.seed, args.cases, Path(folder), args.save, not args.no_memory
            )
            failed += len(tally.failures)
            print(
                f"{name:<5} {tally.cases:>6} cases ({tally.refused} refused) in"
                f" {time.perf_counter() - began:6.1f} s: {len(tally.failures)} failures;"
                f" worst {tally.worst[0] * 1e3:7.1f} ms (case {tally.worst[1]};"
                f" {tally.slow} over 1 s),"
                f" peak {tally.peak[0] / 2**20:6.1f} MiB (case {tally.peak[1]})",
                flush=True,
            )
            kinds: dict[str, list[int]] = {}
            for number, problem in tally.failures:
                kinds.setdefault(re.sub(r"\d+", "N", problem)[:120], []).append(number)
            for kind, numbers in sorted(kinds.items(), key=lambda item: -len(item[1])):
                print(f"      {len(numbers):>5} x {kind}  (cases {numbers[:5]})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
