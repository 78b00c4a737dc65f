"""Where a job's values come from (config layer): layers, most specific first.

A value is looked up in layers: the job, its policy, what that policy ``extends`` (a file
policy named like a built-in tier and without ``extends`` extends the built-in tier), down to
a built-in tier. The first layer that gives a key gives its value and its provenance (its
``label``: ``job dify``, ``policy nightly``, ``built-in tier2``). ``check`` is taken key by
key; retention rules for a repository by name win over ``default`` rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stackvault.config.durations import Span
from stackvault.config.job import CheckSettings, DrillSettings, Retention, Sourced
from stackvault.config.model import (
    CheckEntry,
    DataSubset,
    DrillEntry,
    JobEntry,
    PolicyEntry,
    RetentionEntry,
)
from stackvault.config.schedule import Schedule
from stackvault.config.tiers import DEFAULT_RETENTION, TIERS
from stackvault.config.yamlfile import KeyPath


@dataclass(frozen=True)
class Layer:
    """One place values come from: its label, its entry, and its key path (None: built in)."""

    label: str
    entry: PolicyEntry | JobEntry
    path: KeyPath | None


def policy_chain(name: str, policies: Mapping[str, PolicyEntry]) -> list[Layer] | None:
    """The layers of policy ``name`` (``policies``: the file's valid ones), most specific
    first; None if it is unknown or loops (the file's check names where)."""
    layers: list[Layer] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None:
        entry = policies.get(current)
        if entry is None:
            if current in TIERS:
                layers.append(Layer(f"built-in {current}", TIERS[current], None))
                return layers
            return None
        if current in seen:
            return None
        seen.add(current)
        layers.append(Layer(f"policy {current}", entry, ("policies", current)))
        parent = entry.extends
        if parent is None or parent == current:
            if current in TIERS:
                layers.append(Layer(f"built-in {current}", TIERS[current], None))
            return layers
        current = parent
    return layers


def _find(layers: list[Layer], key: str) -> tuple[object, Layer] | None:
    for layer in layers:
        value = getattr(layer.entry, key, None)
        if value is not None:
            return value, layer
    return None


def first_span(layers: list[Layer], key: str) -> tuple[Span, Layer] | None:
    """The first layer's duration under ``key`` (rpo, rto, window), and that layer."""
    found = _find(layers, key)
    if found is None:
        return None
    assert isinstance(found[0], Span)
    return found[0], found[1]


def first_schedule(layers: list[Layer]) -> tuple[Schedule, Layer] | None:
    """The first layer's schedule, and that layer."""
    found = _find(layers, "schedule")
    if found is None:
        return None
    assert isinstance(found[0], Schedule)
    return found[0], found[1]


def check_settings(layers: list[Layer]) -> CheckSettings:
    """``check`` key by key (``every``; ``read_data_subset``, which may say none); what no
    layer gives: every 7 days, no data read."""
    every: Sourced[Span] | None = None
    subset: Sourced[DataSubset | None] | None = None
    for layer in layers:
        entry: CheckEntry | None = layer.entry.check
        if entry is None:
            continue
        if every is None and entry.every is not None:
            every = Sourced(entry.every, layer.label)
        if subset is None and "read_data_subset" in entry.model_fields_set:
            subset = Sourced(entry.read_data_subset, layer.label)
    return CheckSettings(
        every or Sourced(Span(None, 7 * 1440), "default"),
        subset or Sourced(None, "default"),
    )


def drill_settings(layers: list[Layer], rto: Sourced[Span]) -> DrillSettings:
    """``drill`` key by key; what no layer gives: no scheduled drills, the ``latest``
    snapshot, a window of the ``rto``."""
    every: Sourced[Span] | None = None
    snapshot: Sourced[str] | None = None
    window: Sourced[Span] | None = None
    for layer in layers:
        entry: DrillEntry | None = layer.entry.drill
        if entry is None:
            continue
        if every is None and entry.every is not None:
            every = Sourced(entry.every, layer.label)
        if snapshot is None and entry.snapshot is not None:
            snapshot = Sourced(entry.snapshot, layer.label)
        if window is None and entry.window is not None:
            window = Sourced(entry.window, layer.label)
    return DrillSettings(
        every,
        snapshot or Sourced("latest", "default"),
        window or Sourced(rto.value, f"the rto ({rto.source})"),
    )


def retention_for(layers: list[Layer], repo: str) -> Sourced[Retention] | None:
    """The rules for repository ``repo``: the first layer naming it, else the first with
    ``default``; None if no layer has either."""
    for key, suffix in ((repo, ""), (DEFAULT_RETENTION, f", retention.{DEFAULT_RETENTION}")):
        for layer in layers:
            entry: RetentionEntry | None = (layer.entry.retention or {}).get(key)
            if entry is not None:
                return Sourced(Retention(entry.rules()), layer.label + suffix)
    return None
