"""The threshold policies: how a score becomes a tag. Each is one function registered in
`registry.POLICIES`: given the validation split's labels and scores (and the thresholds of
the policies registered before it), it returns one threshold, or one per tag. Evaluation
(metrics.json, the policy table, the comparison rows), the plots, the ablation and the
tagger (`animetag tag --policy`) all iterate `table()`; a name not in it is an error that
lists the known ones.

Adding one is one function and its test::

    from animetag.registry import POLICIES

    @POLICIES.register("F1-macro", key="macro_threshold", label="best F1-macro", kind="tuned global")
    def macro(y_val, s_val, tuned):
        \"\"\"The one threshold that maximises F1-macro on validation.\"\"\"
        ...  # a float, or an array with one threshold per tag

Thresholds are always tuned on the validation split and saved in the run's thresholds.json
under the policy's `key`'s entry (`saved`); a fixed policy (`fixed=True`) needs no data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from animetag.metrics import precision_recall_equal_threshold, tune_global_threshold, tune_per_tag_thresholds
from animetag.registry import POLICIES, Entry


@dataclass(frozen=True)
class ThresholdPolicy:
    """A registered policy as the rest of the project reads it."""

    entry: Entry

    @property
    def name(self) -> str:  # short name: comparison rows, `animetag tag --policy`
        return self.entry.name

    @property
    def key(self) -> str:  # its entry in metrics.json
        return self.entry.extra.get("key", self.name)

    @property
    def label(self) -> str:  # in tables and plots
        return self.entry.extra.get("label", self.name)

    @property
    def kind(self) -> str:  # the group the comparison sets it in beside published rows (reference.POLICY_KINDS)
        return self.entry.extra.get("kind", "tuned global")

    @property
    def fixed(self) -> bool:  # needs no tuning (and no thresholds.json)
        return bool(self.entry.extra.get("fixed", False))

    @property
    def saved(self) -> str:  # its entry in thresholds.json
        return self.entry.extra.get("saved", self.key)

    def tune(self, y_val: np.ndarray, s_val: np.ndarray, tuned: dict[str, Any]) -> float | np.ndarray:
        t = self.entry.fn(y_val, s_val, tuned)
        return float(t) if np.ndim(t) == 0 else np.asarray(t, dtype=np.float64)

    def threshold(self, tuned: dict[str, Any]) -> float | np.ndarray:
        """Its threshold from freshly tuned thresholds (`tune_all`: by `saved`; per tag an
        array in tag order)."""
        if self.fixed:
            return float(self.entry.fn(None, None, {}))
        return tuned[self.saved]

    def for_tags(self, saved: dict[str, Any] | None, names: Sequence[str]) -> np.ndarray:
        """One threshold per tag of `names` from a run's thresholds.json (a per-tag entry is
        by name; a tag it lacks takes the global threshold)."""
        if self.fixed:
            return np.full(len(names), float(self.entry.fn(None, None, {})))
        if not saved or self.saved not in saved:
            raise FileNotFoundError(f"threshold policy {self.name!r} needs the run's tuned thresholds "
                                    "(thresholds.json): run `animetag evaluate` first, or use --policy 0.5")
        value = saved[self.saved]
        if isinstance(value, dict):
            g = float(saved.get("global", 0.5))
            return np.array([float(value.get(n, g)) for n in names])
        return np.full(len(names), float(value))

    def describe(self, tuned: dict[str, Any]) -> str:
        """The threshold as a comparison row states it."""
        t = self.threshold(tuned)
        if self.fixed:
            return f"{float(t):g}"
        if np.ndim(t):
            return f"{self.label} (tuned on val)"
        return f"{self.name} ({float(t):.2f}, tuned on val)"


def table() -> tuple[ThresholdPolicy, ...]:
    """Every registered policy, in registration order (the built-in ones first)."""
    return tuple(ThresholdPolicy(e) for e in POLICIES.entries())


def names() -> list[str]:
    return [p.name for p in table()]


def get(name: str) -> ThresholdPolicy:
    """A policy by its name or its metrics.json key."""
    for p in table():
        if name in (p.name, p.key):
            return p
    raise ValueError(f"threshold policy {name!r} is not one of {names()}")


def tune_all(y_val: np.ndarray, s_val: np.ndarray) -> dict[str, Any]:
    """Every policy's threshold from validation data alone, by its `saved` name (a policy
    sees the thresholds of those before it: per tag falls back on the global one)."""
    tuned: dict[str, Any] = {}
    for p in table():
        tuned[p.saved] = p.tune(y_val, s_val, tuned)
    return tuned


DEFAULT_TAGGING = "per-tag"  # what `animetag tag` applies when the run has been evaluated


# -- the registered policies ----------------------------------------------------------------

@POLICIES.register("0.5", key="at_0.5", label="0.5 (the thesis's)", kind="0.5", fixed=True)
def at_half(y_val, s_val, tuned):
    """A fixed 0.5 for every tag (the thesis's)."""
    return 0.5


@POLICIES.register("global", key="global_threshold", label="one global threshold", saved="global")
def global_threshold(y_val, s_val, tuned):
    """The one threshold that maximises F1-micro on validation."""
    return tune_global_threshold(y_val, s_val)


@POLICIES.register("P=R", key="precision_equals_recall", label="precision = recall", kind="P=R")
def precision_equals_recall(y_val, s_val, tuned):
    """The one threshold where micro precision equals recall on validation (the WD taggers')."""
    return precision_recall_equal_threshold(y_val, s_val)


@POLICIES.register("per-tag", key="per_tag_thresholds", label="per tag", kind="per tag", saved="per_tag")
def per_tag(y_val, s_val, tuned):
    """Per tag, the threshold that maximises its F1 on validation (the global one where too few positives)."""
    g = tuned["global"] if "global" in tuned else tune_global_threshold(y_val, s_val)
    return tune_per_tag_thresholds(y_val, s_val, fallback=g)
