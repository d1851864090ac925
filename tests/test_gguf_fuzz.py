"""Mutated headers: the reader either succeeds or raises GGUFError, never anything else."""

from __future__ import annotations

import json
import random
import struct
import tempfile
from functools import cache
from pathlib import Path

import gguf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import GGUFError
from harness.gguf import ArraySummary, GGUFHeader, derive_facts, read_header
from harness.oci import gguf_entry
from tests.gguf_files import write_fuzz_seed, write_model

# The varied small header, and a model with one key of every scalar type (FLOAT32 among them).
SEEDS = ("fuzz", "model")


@cache
def seed(name: str = "fuzz", big_endian: bool = False) -> bytes:
    order = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.gguf"
        if name == "model":
            return write_model(path, endianess=order)[0].read_bytes()
        return write_fuzz_seed(path, order).read_bytes()


# Values that make counts, lengths and types lie in the ways that matter.
INTERESTING = [
    b"\xff" * 8,
    b"\x00" * 8,
    b"\xff" * 4,
    b"\x7f" + b"\xff" * 7,
    b"\xff" * 7 + b"\x7f",
    struct.pack("<Q", 2**63),
    struct.pack("<Q", 10**15),
    struct.pack("<Q", 2**32 + 1),
    struct.pack("<I", 13),  # one past the last value type
    struct.pack("<I", gguf.GGUFValueType.ARRAY),
    struct.pack("<I", gguf.GGUFValueType.STRING),
    struct.pack("<I", 5),  # five dimensions
    struct.pack("<I", gguf.GGUFValueType.FLOAT32),
    struct.pack("<f", 3.4028234663852886e38),  # FLT_MAX: some decimals near it overflow a float32
    b"\x80",
    b"\xc3",  # a UTF-8 lead byte with nothing after it
    b"\x00",
    b"\x01",
]


@cache
def boundaries(name: str = "fuzz") -> list[int]:
    """Where a seed's fields start (in either byte order): the bytes most worth mutating."""
    data = seed(name)
    header = read_header(data)
    found = [4, 8, 16, header.data_offset]
    for field in header.metadata.values():
        type_at = field.offset + 8 + len(field.key.encode())
        found += [field.offset, type_at, type_at + 4, type_at + 8]  # key, type, value, length
    for tensor in header.tensors:
        start = data.index(struct.pack("<Q", len(tensor.name)) + tensor.name.encode())
        dims_at = start + 8 + len(tensor.name)
        type_at = dims_at + 4 + 8 * len(tensor.shape)
        found += [start, dims_at, dims_at + 4, type_at, type_at + 4]
    return sorted(set(found))


KINDS = ("flip", "overwrite", "truncate", "insert", "delete")


def mutate(rng: random.Random) -> bytes:
    """A seed (either byte order) with one to three mutations, each at a field boundary or
    anywhere. Hypothesis drives ``rng`` here; benchmarks/fuzz_gguf.py seeds a plain Random."""
    name = rng.choice(SEEDS)
    data = bytearray(seed(name, rng.choice((False, True))))
    fields = boundaries(name)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(KINDS)
        anywhere = rng.randint(0, min(len(data), fields[-1]))  # the header, not tensor data
        at = min(rng.choice(fields) if rng.choice((True, False)) else anywhere, len(data))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            value = _value(rng, 8)
            data[at : at + len(value)] = value
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = _value(rng, 16)
        elif kind == "delete":
            del data[at : at + rng.randint(1, 16)]
    return bytes(data)


def _value(rng: random.Random, longest: int) -> bytes:
    if rng.choice((True, False)):
        return rng.choice(INTERESTING)
    return rng.randbytes(rng.randint(1, longest))


def check_consistent(header: GGUFHeader, size: int) -> None:
    """What a successful parse promises: every tensor's data lies inside the file."""
    assert header.file_size == size
    assert header.data_offset % header.alignment == 0
    packed = 0
    for tensor in header.tensors:
        assert tensor.offset == packed and tensor.offset % header.alignment == 0
        assert header.data_offset + tensor.offset + tensor.n_bytes <= size
        packed += -(-tensor.n_bytes // header.alignment) * header.alignment
    assert len(header.tensors) == header.tensor_count


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rng=st.randoms(use_true_random=False), arrays=st.booleans())
def test_mutations_succeed_or_raise_gguf_error(rng: random.Random, arrays: bool) -> None:
    data = mutate(rng)
    try:
        header = read_header(data, arrays=arrays)
    except GGUFError as error:
        assert error.location is not None and error.location.offset is not None
        assert 0 <= error.location.offset <= len(data)
        return
    check_consistent(header, len(data))
    json.dumps(gguf_entry(header, "/m.gguf", 1), allow_nan=False)
    try:
        facts = derive_facts([header], ["<mutated>"])
    except GGUFError:
        return
    json.dumps(facts.to_json(), allow_nan=False)


def test_seeds_are_valid() -> None:
    little, big = read_header(seed()), read_header(seed(big_endian=True))
    assert little.get("tokenizer.ggml.tokens") == ArraySummary("STRING", 70)
    assert len(little.tensors) == 2
    assert (big.byte_order, big.metadata, big.tensors) == ("big", little.metadata, little.tensors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False))
def test_mutations_both_readers_accept_read_alike(rng: random.Random) -> None:
    """Where gguf.GGUFReader and this reader both accept a mutant, they agree on it."""
    data = mutate(rng)
    try:
        ours = read_header(data)
    except GGUFError:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutant.gguf"
        path.write_bytes(data)
        try:
            reader = gguf.GGUFReader(path)
            theirs = {
                key: (field.offset, field.types[0].name, len(field.data), field.contents())
                for key, field in reader.fields.items()
                if not key.startswith("GGUF.")
            }
            tensors = [
                (t.name, tuple(t.shape.tolist()), t.tensor_type.name) for t in reader.tensors
            ]
        except Exception:  # gguf-py has no error type of its own; any failure is a rejection
            return
    assert list(ours.metadata) == list(theirs)
    for key, (offset, kind, length, value) in theirs.items():
        field = ours.metadata[key]
        assert (field.offset, field.type) == (offset, kind)
        summary = field.summary
        if summary is not None:
            assert summary.length == length
        else:
            assert field.value == value or field.value != field.value  # NaN
    assert [(t.name, t.shape, t.ggml_type) for t in ours.tensors] == tensors
