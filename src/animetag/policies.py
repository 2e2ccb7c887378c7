"""The threshold policies: how a score becomes a tag. One table, used by evaluation
(metrics.json, the policy table, the comparison rows), the plots, and the tagger (`animetag
tag --policy`). A name not in it is an error that lists the known ones.

Thresholds are always tuned on the validation split (`evaluate.tune_thresholds`) and saved in
the run's thresholds.json; a policy says which of them it applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ThresholdPolicy:
    key: str  # its entry in metrics.json
    name: str  # short name: comparison rows, `animetag tag --policy`
    label: str  # in tables and plots
    kind: str  # the group the comparison sets it in beside published rows (reference.POLICY_KINDS)
    tuned: str | None  # the thresholds.json entry it applies; None: a fixed 0.5

    def threshold(self, tuned: dict[str, Any]) -> float | np.ndarray:
        """Its threshold from freshly tuned thresholds (`per_tag` an array in tag order)."""
        return 0.5 if self.tuned is None else tuned[self.tuned]

    def for_tags(self, saved: dict[str, Any] | None, names: Sequence[str]) -> np.ndarray:
        """One threshold per tag of `names` from a run's thresholds.json (`per_tag` by name;
        a tag it lacks takes the global threshold)."""
        if self.tuned is None:
            return np.full(len(names), 0.5)
        if not saved or self.tuned not in saved:
            raise FileNotFoundError(f"threshold policy {self.name!r} needs the run's tuned thresholds "
                                    "(thresholds.json): run `animetag evaluate` first, or use --policy 0.5")
        if self.tuned == "per_tag":
            per, g = saved["per_tag"], float(saved.get("global", 0.5))
            return np.array([float(per.get(n, g)) for n in names])
        return np.full(len(names), float(saved[self.tuned]))

    def describe(self, tuned: dict[str, Any]) -> str:
        """The threshold as a comparison row states it."""
        if self.tuned is None:
            return "0.5"
        if self.tuned == "per_tag":
            return "per tag (tuned on val)"
        return f"{self.name} ({float(tuned[self.tuned]):.2f}, tuned on val)"


POLICIES: tuple[ThresholdPolicy, ...] = (
    ThresholdPolicy("at_0.5", "0.5", "0.5 (the thesis's)", "0.5", None),
    ThresholdPolicy("global_threshold", "global", "one global threshold", "tuned global", "global"),
    ThresholdPolicy("precision_equals_recall", "P=R", "precision = recall", "P=R", "precision_equals_recall"),
    ThresholdPolicy("per_tag_thresholds", "per-tag", "per tag", "per tag", "per_tag"),
)
DEFAULT_TAGGING = "per-tag"  # what `animetag tag` applies when the run has been evaluated


def names() -> list[str]:
    return [p.name for p in POLICIES]


def get(name: str) -> ThresholdPolicy:
    """A policy by its name or its metrics.json key."""
    for p in POLICIES:
        if name in (p.name, p.key):
            return p
    raise ValueError(f"threshold policy {name!r} is not one of {names()}")
