"""How much a random split flatters test F1 (notebook 04): the same images split by family
(no test image has a family member in train) and at random (variants and re-uploads on both
sides), a run trained on each, both scored under one threshold policy tuned on their own
validation images; and, inside the random split, its test images with family in train
against the others.

The two runs differ by their training randomness too (about 0.01 between two runs on the
sample): the within-split comparison is the sharper one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from animetag.data.subset import FAMILIES, twin_subset
from animetag.evaluation.evaluate import predict_split
from animetag.folders import RunFolder, SubsetFolder
from animetag.metrics import bootstrap_f1_ci, f1_at
from animetag.model import policies
from animetag.vocab import split_outputs


def random_split_twin(subset: str | Path, out: str | Path, profile: str) -> Path:
    """`subset`'s twin (same images, tags and seed) split at random instead of by family."""
    return twin_subset(subset, out, profile, "leave the leakage study out", split_by="random")


def _family_of(data: SubsetFolder) -> dict[int, int]:
    f = data.path / FAMILIES
    if not f.exists():
        raise FileNotFoundError(f"{f}: no families recorded; rebuild the subset with this version")
    fam = pd.read_csv(f)
    return dict(zip(fam["id"].astype(int), fam["family"].astype(int)))


def _scores(data: SubsetFolder, run: RunFolder, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids, y, s = predict_split(data, run, split)
    n = data.n_ratings
    return ids, split_outputs(y, n)[1], split_outputs(s, n)[1]


def _row(name: str, y: np.ndarray, s: np.ndarray, th: Any, n_boot: int) -> dict[str, Any]:
    f1 = f1_at(y, s, th)
    ci = bootstrap_f1_ci(y, s >= np.asarray(th), n_boot=n_boot)
    return {"test images": name, "n": int(len(y)), **{k: round(v, 4) for k, v in f1.items()},
            **{f"{k} 95% CI": f"{ci[k][0]:.3f}-{ci[k][1]:.3f}" for k in ci}}


def leakage_table(family_data: str | Path, family_run: str | Path, random_data: str | Path, random_run: str | Path,
                  policy: str = "global", n_boot: int = 1000) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows: the family-aware split's test images (its run), the random split's (its
    run), and the random split's test images with family in train and without. Thresholds:
    `policy`, tuned on each run's own validation images. Returns the table and the two
    differences (random minus family-aware; leaked minus clean)."""
    pol = policies.get(policy)
    out, th = [], {}
    for label, data, run in (("family-aware split", family_data, family_run), ("random split", random_data, random_run)):
        data, run = SubsetFolder.of(data), RunFolder.of(run)
        _, yv, sv = _scores(data, run, "val")
        ids, y, s = _scores(data, run, "test")
        th[label] = pol.threshold(policies.tune_all(yv, sv))
        out.append(_row(label, y, s, th[label], n_boot))
        if label == "random split":
            family = _family_of(data)
            m = data.manifest
            fam = np.array([family.get(int(i), int(i)) for i in m["id"]])
            split = m["split"].to_numpy()
            trained = set(fam[split == "train"].tolist())
            seen = np.array([family.get(int(i), int(i)) in trained for i in ids])  # as `families.leaked` counts
            out.append(_row("  random split, with family in train", y[seen], s[seen], th[label], n_boot))
            out.append(_row("  random split, without", y[~seen], s[~seen], th[label], n_boot))
    table = pd.DataFrame(out).set_index("test images")
    rows = table.index.tolist()
    gaps = {k: {"random_minus_family_aware": round(float(table.loc[rows[1], k] - table.loc[rows[0], k]), 4),
                "leaked_minus_clean": round(float(table.loc[rows[2], k] - table.loc[rows[3], k]), 4)}
            for k in ("f1_micro", "f1_macro")}
    return table, {"policy": pol.key, **gaps}
