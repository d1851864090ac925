"""Run settings: llama-server's Cmd, model.yaml and explicit settings, layered."""

from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.estimate import Budget, RunSettings

SEED_CMD = [
    "-m", "/gguf/model.gguf", "-c", "8192", "-np", "2", "-fa", "on", "-ctk", "Q8_0",
    "-lm", "none", "-ngl", "20", "-ts", "3,1", "--alias", "x", "-b", "1024", "-ub", "256",
]  # fmt: skip


def test_cmd_sets_what_it_names_and_nothing_else() -> None:
    s = RunSettings.from_cmd(SEED_CMD)
    assert s.ctx_size == 8192
    assert s.parallel == 2
    assert s.flash_attn is True
    assert s.cache_type_k == "q8_0"
    assert s.cache_type_v is None
    assert s.mmap is False
    assert s.gpu_layers == 20
    assert s.tensor_split == (3.0, 1.0)
    assert (s.batch_size, s.ubatch_size) == (1024, 256)
    assert s.kv_unified is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-fa", "off"], False),
        (["--flash-attn", "on"], True),
        (["-fa", "auto"], None),
        (["-fa", "enabled"], True),
    ],
)
def test_flash_attention_spellings(args: list[str], expected: bool | None) -> None:
    assert RunSettings.from_cmd(args).flash_attn is expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-fa"], "-fa needs a value"),  # the bare flag of older llama-servers
        (["-fa", "-c", "512"], "'512' is not a llama-server option"),  # -fa took "-c"
        (["--flash-attn=on"], "write --flash-attn on as two arguments"),
        (["--no-mmap"], "'--no-mmap' is not a llama-server option"),  # now -lm none
    ],
)
def test_what_this_llama_server_refuses_is_refused(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RunSettings.from_cmd(args)


def test_other_spellings() -> None:
    s = RunSettings.from_cmd(
        ["--ctx-size", "4096", "-ngl", "all", "-lm", "none", "--embedding", "-nkvo", "-sm", "row"]
    )
    assert s.ctx_size == 4096
    assert s.gpu_layers is None
    assert s.mmap is False
    assert s.embeddings is True
    assert s.kv_offload is False
    assert s.split_mode == "row"
    rerank = RunSettings.from_cmd(["--rerank"])
    assert (rerank.embeddings, rerank.pooling) == (True, "rank")


def test_explicit_settings_override_the_cmd_and_keep_the_rest() -> None:
    cmd = RunSettings.from_cmd(SEED_CMD)
    explicit = RunSettings(ctx_size=2048, flash_attn=False)
    merged = cmd.override(explicit)
    assert merged.ctx_size == 2048
    assert merged.flash_attn is False
    assert merged.parallel == 2  # from the Cmd, not llama-server's default
    assert merged.cache_type_k == "q8_0"


def test_llama_server_defaults_fill_only_what_nothing_set() -> None:
    s = RunSettings().resolved()
    assert (s.ctx_size, s.batch_size, s.ubatch_size) == (0, 2048, 512)
    assert (s.parallel, s.kv_unified) == (4, True)  # -np auto: 4 slots, one unified cache
    assert (s.cache_type_k, s.cache_type_v, s.mmap, s.kv_offload) == ("f16", "f16", True, True)
    assert s.flash_attn is None and s.gpu_layers is None
    explicit = RunSettings(parallel=2).resolved()
    assert (explicit.parallel, explicit.kv_unified) == (2, False)


def test_yaml_memory_section() -> None:
    s = RunSettings.from_yaml(
        {"ctx_size": 8192, "flash_attn": True, "cache_type_v": "q8_0", "gpu_layers": "all",
         "budgets": [{"name": "x", "vram": "24GiB"}], "ram": "8GiB"}
    )  # fmt: skip
    assert (s.ctx_size, s.flash_attn, s.cache_type_v, s.gpu_layers) == (8192, True, "q8_0", None)
    assert RunSettings.from_yaml(None) == RunSettings()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cache_type_k": "q3_k"}, "cache_type_k"),
        ({"split_mode": "tensor"}, "split_mode"),
        ({"parallel": 0}, "parallel"),
        ({"tensor_split": (-1.0,)}, "tensor_split"),
    ],
)
def test_bad_settings_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RunSettings(**kwargs)  # type: ignore[arg-type]


def test_a_flag_without_its_value_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="needs a value"):
        RunSettings.from_cmd(["-c"])
    with pytest.raises(UsageError, match="not a valid value"):
        RunSettings.from_cmd(["-c", "big"])


def test_budget_from_yaml() -> None:
    b = Budget.from_yaml(
        {"name": "2x16", "vram": "16GiB", "count": 2, "headroom": "10%", "full_offload": False},
        ram="32GiB",
    )
    assert (b.vram, b.count, b.ram, b.full_offload) == (16 << 30, 2, 32 << 30, False)
    assert b.usable() == (16 << 30) - (16 << 30) // 10
    assert [d.memory for d in b.devices()] == [16 << 30, 16 << 30]
    fixed = Budget.from_yaml({"name": "a", "vram": 1000, "headroom": "100B", "ctx_size": 512})
    assert fixed.usable() == 900
    assert fixed.settings(RunSettings(ctx_size=4096)).ctx_size == 512
    ram_only = Budget.from_yaml({"name": "cpu", "ram": "4GB"})
    assert ram_only.devices() == () and ram_only.ram == 4_000_000_000
