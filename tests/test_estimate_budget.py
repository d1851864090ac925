"""Budgets: pass/fail with margins, partial offload fitted to the GPUs, largest context."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.estimate import (
    Budget,
    RunSettings,
    check_budget,
    estimate,
    evaluate_budget,
    load_model,
    max_context,
)
from tests.estimate_models import write_llama

MiB = 1 << 20


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("m") / "llama.gguf")


def _gpu_total(path: Path, settings: RunSettings, budget: Budget) -> int:
    return estimate(path, budget.settings(settings), budget.devices()).devices[0].total


def test_pass_and_fail_with_the_margin_in_bytes(llama: Path) -> None:
    settings = RunSettings(ctx_size=4096)
    probe = Budget("probe", vram=1 << 40)
    need = _gpu_total(llama, settings, probe)
    fits = Budget("fits", vram=need + 10 * MiB)
    result = check_budget(estimate(llama, settings, fits.devices()), fits)
    assert result.passed and result.margin == 10 * MiB
    tight = Budget("tight", vram=need + 10 * MiB, headroom=20 * MiB)
    result = check_budget(estimate(llama, settings, tight.devices()), tight)
    assert not result.passed and result.margin == -10 * MiB
    assert "does not fit" in result.summary() and "GPU0" in result.summary()


def test_ram_budget_and_full_offload_requirement(llama: Path) -> None:
    settings = RunSettings(ctx_size=2048, gpu_layers=2)
    budget = Budget("gpu", vram=8 << 30, ram=1 << 30)
    result = check_budget(estimate(llama, settings, budget.devices()), budget)
    failed = {c.what for c in result.checks if not c.ok}
    assert failed == {"full offload"}
    relaxed = Budget("gpu", vram=8 << 30, ram=1 << 30, full_offload=False)
    assert check_budget(estimate(llama, settings, relaxed.devices()), relaxed).passed
    cpu = Budget("cpu", ram=1 * MiB)
    result = check_budget(estimate(llama, settings), cpu)
    assert [c.what for c in result.checks] == ["RAM"] and not result.passed


def test_an_estimate_for_other_gpus_is_refused(llama: Path) -> None:
    two = Budget("two", vram=8 << 30, count=2)
    with pytest.raises(UsageError, match="2 GPU"):
        check_budget(estimate(llama, RunSettings(), Budget("one", vram=8 << 30).devices()), two)


def test_partial_offload_budgets_get_as_many_layers_as_fit(llama: Path) -> None:
    settings = RunSettings(ctx_size=8192, parallel=1)
    model = load_model(llama)
    all_layers = Budget("big", vram=1 << 40, full_offload=False)
    need = _gpu_total(llama, settings, all_layers)
    small = Budget("small", vram=need - 1 * MiB, full_offload=False)
    result = evaluate_budget(model, settings, small, find_max_context=False)
    assert result.passed
    assert 0 < result.estimate.offload_layers < model.n_layer + 1
    assert result.estimate.devices[0].total <= small.vram - 0  # type: ignore[operator]


def test_largest_context_fits_and_one_step_more_does_not(llama: Path) -> None:
    model = load_model(llama)
    settings = RunSettings(parallel=1, flash_attn=True)
    at_8k = _gpu_total(llama, settings.override(RunSettings(ctx_size=8192)), Budget("x", vram=1))
    budget = Budget("mid", vram=at_8k + 1)
    best = max_context(model, settings, budget)
    assert best >= 8192 and best % 256 == 0
    fits = estimate(model, settings.override(RunSettings(ctx_size=best)), budget.devices())
    assert check_budget(fits, budget).passed
    beyond = estimate(model, settings.override(RunSettings(ctx_size=best + 256)), budget.devices())
    assert not check_budget(beyond, budget).passed
    assert max_context(model, settings, Budget("tiny", vram=1 * MiB)) == 0
    assert max_context(model, settings, Budget("huge", vram=1 << 40)) == model.n_ctx_train


def test_evaluate_budget_reports_the_largest_context(llama: Path) -> None:
    budget = Budget("gpu", vram=2 << 30, ctx_size=2048)
    result = evaluate_budget(llama, RunSettings(), budget)
    assert result.passed
    assert result.estimate.context_size == 2048
    assert result.max_context == load_model(llama).n_ctx_train
    data = result.to_json()
    assert data["passed"] is True and data["max_context"] == result.max_context
