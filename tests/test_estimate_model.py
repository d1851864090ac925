"""The parts of the memory model that need no llama.cpp: the allocator, layer placement, KV
geometry, GPU placement of every buffer, seed configs and the JSON form."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.estimate import (
    DeviceSpec,
    RunSettings,
    estimate,
    load_model,
    model_info,
    model_info_from_seed,
)
from harness.estimate._alloc import _Heap, allocate
from harness.estimate._compute import CPU_BACKEND
from harness.estimate._ggml import Graph
from harness.estimate._placement import HOST, place_layers
from harness.gguf import read_header
from harness.oci import gguf_entry
from tests.estimate_models import write_gemma3, write_llama, write_mamba

from harness.estimate import _ops as op  # isort: skip

GiB = 1 << 30


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("m") / "llama.gguf")


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gemma3(tmp_path_factory.mktemp("m") / "gemma3.gguf")


# --- the allocator ---------------------------------------------------------------------------


def test_heap_best_fit_reuses_the_smallest_hole_and_merges_neighbours() -> None:
    heap = _Heap(32)
    a = heap.alloc(100)  # padded to 128
    b = heap.alloc(64)
    c = heap.alloc(300)
    assert (a, b, c) == (0, 128, 192)
    heap.free(a, 100)
    heap.free(c, 300)  # merges into the endless block at the end
    d = heap.alloc(60)  # best fit: the 128-byte hole, not the end
    assert d == 0
    heap.free(b, 64)
    heap.free(d, 60)
    assert heap.blocks[0][0] == 0  # everything merged back into one block
    assert len(heap.blocks) == 1
    assert heap.max_size == 192 + 320


def test_in_place_ops_take_over_a_dying_source() -> None:
    w = op.weight("w", "F32", (64, 64))
    x = op.input_tensor("x", "F32", (64, 8))
    y = op.mul_mat(w, x)  # new memory: mul_mat cannot run in place
    z = op.add(y, w)  # y dies here: z takes its block
    s = op.scale(z)
    g = Graph()
    g.expand(s)
    s.is_output = True
    assert allocate(g, [CPU_BACKEND]) == [2 * 64 * 8 * 4]
    assert [n.op for n in g.nodes] == ["MUL_MAT", "ADD", "SCALE"]
    assert g.leafs == [w, x]


def test_a_view_keeps_its_source_alive_until_the_view_is_consumed() -> None:
    x = op.input_tensor("x", "F32", (32, 4))  # 512 bytes, allocated first, as inputs are
    a = op.cont(x)
    v = op.view_nd(a, (16, 4), (a.nb[1],))
    half = op.cont(v)  # allocated while `a` is alive through its view
    b = op.cont(x)  # reuses `a`'s block, freed once `half` consumed the view
    c = op.add(half, op.view_nd(b, (16, 4), (b.nb[1],)))  # runs in place of `half`
    g = Graph()
    g.expand(c)
    c.is_output = True
    assert allocate(g, [CPU_BACKEND])[0] == 512 + 512 + 256


# --- placement -------------------------------------------------------------------------------


def test_the_output_layer_is_offloaded_first_and_token_embeddings_never() -> None:
    p = place_layers(30, [DeviceSpec("a", GiB)], gpu_layers=10, split_mode="layer",
                     tensor_split=None, main_gpu=0)  # fmt: skip
    assert p.output == 0
    assert p.repeating(0) == 9
    assert p.layers[:21] == (HOST,) * 21
    assert not p.full and p.offloaded == 10


def test_layers_split_by_memory_or_tensor_split() -> None:
    two = [DeviceSpec("a", 16 * GiB), DeviceSpec("b", 16 * GiB)]
    even = place_layers(30, two, None, "layer", None, 0)
    assert (even.repeating(0), even.repeating(1), even.output) == (16, 14, 1)
    skewed = place_layers(30, two, None, "layer", (3.0, 1.0), 0)
    assert skewed.repeating(0) == 24
    only_main = place_layers(30, two, None, "none", None, 1)
    assert only_main.repeating(1) == 30 and only_main.repeating(0) == 0


# --- KV geometry -----------------------------------------------------------------------------


def test_sliding_window_layers_keep_the_window_plus_one_ubatch(gemma: Path) -> None:
    model = load_model(gemma)
    assert model.is_swa == (True, True, True, True, True, False, True)
    full = estimate(model, RunSettings(ctx_size=8192, parallel=1, flash_attn=True)).host.kv_cache
    row = 64 * 2  # one head of 64 f16, K and V alike
    swa_cells = 256 + 512  # window + ubatch, padded to 256
    assert full == 2 * row * (8192 + 6 * swa_cells)
    unified = estimate(model, RunSettings(ctx_size=8192, flash_attn=True)).host.kv_cache
    assert unified == 2 * row * (8192 + 6 * (4 * 256 + 512))  # four sequences share it
    swa_full = estimate(
        model, RunSettings(ctx_size=8192, parallel=1, swa_full=True, flash_attn=True)
    )
    assert swa_full.host.kv_cache == 2 * row * 7 * 8192


def test_contexts_are_padded_per_sequence(llama: Path) -> None:
    model = load_model(llama)
    e = estimate(model, RunSettings(ctx_size=1000, parallel=3, kv_unified=False))
    assert (e.context_per_seq, e.context_size) == (512, 1536)
    e = estimate(model, RunSettings(ctx_size=1000, parallel=3, kv_unified=True))
    assert (e.context_per_seq, e.context_size) == (1024, 1024)


def test_recurrent_state_does_not_grow_with_context(tmp_path: Path) -> None:
    model = load_model(write_mamba(tmp_path / "m.gguf"))
    small = estimate(model, RunSettings(ctx_size=512, parallel=2)).host.kv_cache
    big = estimate(model, RunSettings(ctx_size=32768, parallel=2)).host.kv_cache
    assert small == big
    d_inner, d_conv, d_state = 256, 4, 16
    per_seq = ((d_conv - 1) * d_inner + d_state * d_inner) * 4
    assert small == 3 * 2 * per_seq


# --- GPUs ------------------------------------------------------------------------------------


def test_full_offload_leaves_token_embeddings_and_inputs_on_the_host(llama: Path) -> None:
    model = load_model(llama)
    settings = RunSettings(ctx_size=4096)
    cpu = estimate(model, settings)
    gpu = estimate(model, settings, [DeviceSpec("GPU0", 24 * GiB)])
    assert gpu.full_offload and gpu.offload_layers == 5
    assert gpu.host.weights == model.tensors["token_embd.weight"].n_bytes
    assert gpu.host.kv_cache == 0
    assert gpu.devices[0].kv_cache == cpu.host.kv_cache
    assert gpu.devices[0].weights >= cpu.host.weights - gpu.host.weights
    assert 0 < gpu.host.compute < cpu.host.compute  # inputs and the embedding lookup only
    assert gpu.host.other == cpu.host.other  # the logits buffer stays in host memory


def test_no_layers_offloaded_still_offloads_big_matrix_products(llama: Path) -> None:
    model = load_model(llama)
    settings = RunSettings(ctx_size=4096, gpu_layers=0)
    e = estimate(model, settings, [DeviceSpec("GPU0", 24 * GiB)])
    cpu = estimate(model, settings)
    assert e.host.weights == cpu.host.weights and e.host.kv_cache == cpu.host.kv_cache
    assert e.devices[0].weights == 0 and e.devices[0].kv_cache == 0
    assert e.devices[0].compute > 0  # op offload copies host weights in for 512-token batches


def test_kv_offload_off_keeps_the_cache_on_the_host(llama: Path) -> None:
    model = load_model(llama)
    e = estimate(model, RunSettings(ctx_size=4096, kv_offload=False), [DeviceSpec("g", GiB)])
    assert e.devices[0].kv_cache == 0 and e.host.kv_cache > 0


def test_two_gpus_share_the_cache_by_layers_and_duplicate_a_tied_head(gemma: Path) -> None:
    model = load_model(gemma)
    settings = RunSettings(ctx_size=4096, parallel=1)
    one = estimate(model, settings, [DeviceSpec("g", 16 * GiB)])
    two = estimate(model, settings, [DeviceSpec("a", 16 * GiB), DeviceSpec("b", 16 * GiB)])
    assert sum(d.kv_cache for d in two.devices) == one.devices[0].kv_cache
    assert two.devices[1].output_layer and not two.devices[0].output_layer
    embd = model.tensors["token_embd.weight"].n_bytes
    assert two.devices[1].weights > embd  # the tied LM head is a copy on the output's GPU


# --- other sources and forms -----------------------------------------------------------------


def test_a_seed_config_entry_estimates_like_the_file(llama: Path) -> None:
    header = read_header(llama)
    entry = json.loads(json.dumps(gguf_entry(header, "/gguf/model.gguf", 2)))
    from_seed = model_info_from_seed(entry["GGUF"])
    from_file = model_info(header)
    settings = RunSettings(ctx_size=2048)
    assert estimate(from_seed, settings).to_json() == estimate(from_file, settings).to_json()


def test_json_has_every_component_per_device(llama: Path) -> None:
    e = estimate(llama, RunSettings(ctx_size=1024), [DeviceSpec("GPU0", 8 * GiB)])
    data = json.loads(json.dumps(e.to_json()))
    for part in (data["ram"], data["devices"][0]):
        assert {"weights", "kv_cache", "compute", "other", "total", "uma", "non_uma"} <= set(part)
        assert part["total"] == part["weights"] + part["kv_cache"] + part["compute"] + part["other"]
    assert data["full_offload"] is True and data["exact"] is True
    assert e.ram_uma == e.ram + e.vram_uma(0)


def test_a_draft_model_adds_its_own_weights_cache_and_compute(llama: Path, tmp_path: Path) -> None:
    draft = write_llama(tmp_path / "draft.gguf", seed=7)
    main = estimate(llama, RunSettings(ctx_size=2048))
    both = estimate(llama, RunSettings(ctx_size=2048), drafter=draft)
    assert set(both.parts) == {"model", "drafter"}
    assert both.host.weights == 2 * main.host.weights
    assert both.host.kv_cache == 2 * main.host.kv_cache
    # the main context now asks for 1 + 3 drafted outputs per slot: more logits in its graph
    assert both.parts["model"].host.compute >= main.host.compute


def test_adapter_tensors_go_with_the_layer_they_modify(llama: Path, tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "lora.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type("adapter")
    for il in (0, 3):
        writer.add_tensor(f"blk.{il}.attn_q.weight.lora_a", np.zeros((8, 256), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    settings = RunSettings(ctx_size=1024, gpu_layers=2)  # output layer and layer 3 on the GPU
    e = estimate(llama, settings, [DeviceSpec("g", GiB)], adapters=[path])
    lora = e.parts["adapter0"]
    assert lora.host.weights == lora.devices[0].weights == 8 * 256 * 4


def test_unknown_architectures_fall_back_to_a_rough_compute_bound(llama: Path) -> None:
    model = model_info(read_header(llama))
    tensors = {k: v for k, v in model.tensors.items() if k != "blk.0.attn_q.weight"}
    odd = dataclasses.replace(model, arch="qwen9", tensors=tensors)
    e = estimate(odd, RunSettings(ctx_size=2048))
    assert not e.exact and e.notes
    assert e.host.compute > 0
