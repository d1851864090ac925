"""One big blob over several connections (harness/distribution/_ranges.py), against the real
registry behind a proxy that caps each connection's rate as object storage does: the segments
are asked for at once, cover the blob exactly once, and reach the file (or the layer being
unpacked) in order, with the digest checked as one pass."""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import pytest

from harness.distribution import RegistryClient, RegistryOptions, pull_layout, push_layout
from harness.oci import Descriptor, LayerEntry
from harness.store import Store
from tests.images import write_image
from tests.services import Registry
from tests.throttle import ThrottledProxy

pytestmark = [pytest.mark.component("registry"), pytest.mark.usefixtures("no_user_credentials")]

SEGMENT = 1 << 20
RATE = 16 << 20  # per connection


def _blob(registry: Registry, data: bytes, repository: str = "ranges/blob") -> Descriptor:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    descriptor = Descriptor("application/octet-stream", digest, len(data))
    with RegistryClient(registry.host, RegistryOptions(insecure=True)) as client:
        client.upload_blob(repository, descriptor, data)
    return descriptor


def _covered(gets: list[str | None]) -> list[tuple[int, int]]:
    spans = []
    for header in gets:
        assert header is not None
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", header)
        assert match, header
        spans.append((int(match[1]), int(match[2])))
    return sorted(spans)


def test_a_big_blob_comes_over_several_connections_in_order(registry: Registry) -> None:
    data = os.urandom(24 << 20)
    descriptor = _blob(registry, data)
    options = RegistryOptions(insecure=True, range_segment=SEGMENT, range_streams=4)
    out = io.BytesIO()
    with (
        ThrottledProxy(registry.host, RATE) as proxy,
        RegistryClient(proxy.host, options) as client,
    ):
        client.fetch_blob("ranges/blob", descriptor, out)
    assert out.getvalue() == data
    spans = _covered(proxy.gets)
    # Every byte asked for exactly once, a segment at a time.
    assert spans == [(b, b + SEGMENT - 1) for b in range(0, len(data), SEGMENT)]
    assert proxy.peak >= 2  # several at once, not one after another


def test_ranges_turned_off_or_a_small_blob_is_one_request(registry: Registry) -> None:
    data = os.urandom(3 << 20)
    descriptor = _blob(registry, data)
    cases = [
        (RegistryOptions(insecure=True, range_segment=SEGMENT, range_streams=1), data),
        (RegistryOptions(insecure=True, range_segment=2 << 20, range_streams=4), data),
    ]
    for options, expected in cases:
        out = io.BytesIO()
        with (
            ThrottledProxy(registry.host, RATE) as proxy,
            RegistryClient(proxy.host, options) as client,
        ):
            client.fetch_blob("ranges/blob", descriptor, out)
        assert out.getvalue() == expected
        assert proxy.gets == [None] and proxy.peak == 1


def test_a_pull_into_the_store_unpacks_a_ranged_layer(registry: Registry, tmp_path: Path) -> None:
    """The store unpacks a layer as it downloads (a stream): the ranged segments reach it in
    order, and the model is the file that was pushed."""
    model = os.urandom(12 << 20) + b"end"
    layout = tmp_path / "layout"
    write_image(layout, [LayerEntry("/models/m.gguf", model)], cmd=["-m", "/models/m.gguf"])
    push_layout(layout, f"{registry.host}/ranges/model:v1", options=RegistryOptions(insecure=True))
    options = RegistryOptions(insecure=True, range_segment=SEGMENT, range_streams=3)
    with ThrottledProxy(registry.host, RATE) as proxy:
        stored = Store(tmp_path / "store").pull(f"{proxy.host}/ranges/model:v1", options=options)
        assert sum(1 for g in proxy.gets if g is not None and g.startswith("bytes=")) >= 12
        assert proxy.peak >= 2
    assert (stored.root / "models" / "m.gguf").read_bytes() == model


def test_several_blobs_each_over_ranges_share_one_pool_without_warnings(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The shards of a split model come at once, each over its ranges: 3 x 4 connections to
    one host; a pool smaller than that discards connections with a warning on stderr."""
    shards = [os.urandom(4 << 20) for _ in range(3)]
    layout = tmp_path / "layout"
    entries = [LayerEntry(f"/models/m-{n}.gguf", data) for n, data in enumerate(shards)]
    write_image(layout, entries, layers=len(entries))
    push_layout(layout, f"{registry.host}/ranges/split:v1", options=RegistryOptions(insecure=True))
    options = RegistryOptions(insecure=True, range_segment=SEGMENT, range_streams=4, transfers=3)
    with caplog.at_level("WARNING", logger="urllib3"), ThrottledProxy(registry.host, RATE) as proxy:
        pull_layout(f"{proxy.host}/ranges/split:v1", tmp_path / "pulled", options=options)
        assert proxy.peak > 8
    assert [r.getMessage() for r in caplog.records] == []
