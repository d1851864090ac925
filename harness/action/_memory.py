"""Estimate-versus-budget pairs from the report's memory items.

A memory item is one budget of model.yaml's ``memory.budgets`` (``section: "memory"``, ``name``:
the budget's name). The shapes read, the first one preferred:

- what the harness's budget items record: ``expected`` maps each limit to its bytes
  (``{"GPU0": 8589934592, "RAM": ..., "full offload": 0}``) and ``actual`` the same keys to the
  bytes estimated (plus ``max_context`` and the whole ``estimate``); ``full offload`` counts
  layers, not bytes, and is no bar;
- ``{"devices": [{"name": "GPU0", "estimate": 5_100_000_000, "budget": 8_000_000_000}, ...]}``,
  host RAM as a device named ``host`` or ``RAM``;
- ``{"GPU0": {"estimate": N, "budget": M}, "host": {...}}`` (device name -> pair);
- ``{"estimate": N, "budget": M}`` (one device, named by an optional ``"device"`` key);
- a plain number of bytes as ``actual`` with the budget in ``expected`` (a number,
  ``{"max": M}`` or ``{"budget": M}``).

Anything else gives no bar; the item still appears in the check tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.action._records import Item

__all__ = ["Bar", "memory_bars"]

_NOT_DEVICES = ("full offload", "max_context", "estimate", "budget", "max", "min")


@dataclass(frozen=True)
class Bar:
    """One device of one budget: what the model needs there and what the budget allows."""

    budget_name: str
    device: str
    estimate: int
    budget: int | None
    passed: bool

    @property
    def label(self) -> str:
        return f"{self.budget_name} {self.device}" if self.device else self.budget_name

    @property
    def share(self) -> float | None:
        """Estimate over budget (1.0 = exactly full); None without a budget."""
        if not self.budget:
            return None
        return self.estimate / self.budget


def memory_bars(item: Item) -> list[Bar]:
    """The bars of one memory item (see the module doc for the shapes read)."""
    actual, passed = item.actual, item.ok
    limits = item.expected
    if isinstance(actual, Mapping) and isinstance(limits, Mapping):
        shared = [k for k in limits if k not in _NOT_DEVICES and _bytes(actual.get(k)) is not None]
        if shared:
            return [
                Bar(item.name, str(key), int(actual[key]), _bytes(limits[key]), passed)
                for key in shared
            ]
    if isinstance(actual, Mapping):
        devices = actual.get("devices")
        if isinstance(devices, list):
            return [
                bar
                for i, entry in enumerate(devices)
                if isinstance(entry, Mapping)
                and (bar := _pair(item.name, str(entry.get("name") or f"GPU{i}"), entry, passed))
            ]
        if "estimate" in actual:
            found = _pair(item.name, str(actual.get("device") or ""), actual, passed)
            return [found] if found else []
        return [
            bar
            for device, entry in actual.items()
            if isinstance(entry, Mapping) and (bar := _pair(item.name, str(device), entry, passed))
        ]
    estimate = _bytes(actual)
    if estimate is None:
        return []
    return [Bar(item.name, "", estimate, _budget_of(item.expected), passed)]


def _pair(name: str, device: str, entry: Mapping[str, Any], passed: bool) -> Bar | None:
    estimate = _bytes(entry.get("estimate"))
    if estimate is None:
        return None
    return Bar(name, device, estimate, _bytes(entry.get("budget")), passed)


def _budget_of(expected: Any) -> int | None:
    if isinstance(expected, Mapping):
        for key in ("budget", "max", "le", "lt"):
            if key in expected:
                return _bytes(expected[key])
        return None
    return _bytes(expected)


def _bytes(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)
