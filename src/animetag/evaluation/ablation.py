"""The ablation study the thesis planned: variants of the thesis model trained on one subset
with one budget (epochs), each evaluated under one threshold policy on the same test images,
with bootstrap intervals, its parameters, model size and training speed.

Every variant is a full run folder (`out/<slug>/`, usable by notebooks 04 and 05), and
`out/ablation.json` records each finished variant's settings and row: run again, a variant
whose settings are unchanged is not trained again, one interrupted mid-training resumes from
its last epoch, and one whose settings changed is trained afresh.

A variant trained on more tags (a second subset, same metadata and seed) is scored on the
base subset's tags, so that its F1 compares with the others'; its test images are its own
subset's (the row says so).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from animetag.config import deep_merge, train_config
from animetag.data.subset import twin_subset
from animetag.evaluation.evaluate import evaluate, evaluate_scores, predict_split, tune_thresholds
from animetag.folders import RunFolder, SubsetFolder, data_signature, write_json_atomic
from animetag.metrics import paired_bootstrap_diff
from animetag.model import policies
from animetag.vocab import tag_rows

RECORD = "ablation.json"


@dataclass(frozen=True)
class Variant:
    name: str  # the row's label
    changes: dict[str, Any] = field(default_factory=dict)  # training settings over the profile's
    subset: str = "base"  # which subset it trains on: "base" or "more_tags"

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def thesis_variants(backbone: str = "efficientnetv2_b0", weights: str = "imagenet",
                    more_tags: bool = True) -> list[Variant]:
    """What a researcher compares first: the thesis model; SE off; BCE and ASL for focal loss;
    a keras.applications backbone (pretrained with `weights`); more tags."""
    label = backbone + (" (imagenet)" if weights else " (from scratch)")
    out = [Variant("ResNet-SE, focal (thesis)"),
           Variant("ResNet without SE, focal", {"model": {"backbone": "resnet"}}),
           Variant("ResNet-SE, BCE", {"loss": "bce"}),
           Variant("ResNet-SE, ASL", {"loss": "asl"}),
           Variant(f"{label}, focal", {"model": {"backbone": backbone, **({"weights": weights} if weights else {})}})]
    if more_tags:
        out.append(Variant("ResNet-SE, focal, more tags", subset="more_tags"))
    return out


def more_tags_subset(base: str | Path, out: str | Path, top_k: int, profile: str) -> Path:
    """The base subset's twin with `top_k` general tags: built (once) from the metadata and
    images its subset.json records, with its settings (size, seed, image count) but `top_k`."""

    settings = SubsetFolder.of(base).summary["settings"]
    if top_k <= settings["top_k"]:
        raise ValueError(f"more tags: top_k {top_k} is not more than the base subset's {settings['top_k']}")
    return twin_subset(base, out, profile, "leave the more-tags variant out (MORE_TAGS=0)", top_k=top_k)


def _scores_on(run: RunFolder, subset: SubsetFolder, names: list[str], split: str):
    """(labels, scores) of `split` over the tags `names`, in that order."""

    _, y, s = predict_split(subset, run, split)
    col = {n: i for i, n in enumerate(run.tags["name"])}
    idx = [col[n] for n in names]
    return y[:, idx], s[:, idx]


def _row(variant: Variant, run: RunFolder, subset: SubsetFolder, base_tags: list[str], trained: dict[str, Any],
         policy: policies.ThresholdPolicy, n_boot: int) -> dict[str, Any]:

    full = evaluate(subset, run, split="test", n_boot=n_boot)  # the run's own metrics.json
    if tag_rows(run.tags)["name"].tolist() == base_tags:
        m = full  # scored on the tags it was trained on: its own evaluation is the row's
    else:  # the base tags alone, thresholds tuned on val as always
        y_val, s_val = _scores_on(run, subset, base_tags, "val")
        y, s = _scores_on(run, subset, base_tags, "test")
        m, _ = evaluate_scores(y_val, s_val, y, s, n_boot=n_boot)
    ci = m["ci95_by_policy"][policy.key]
    cfg = run.config["train"]
    epochs = trained["epochs_done"] - trained["resumed_from_epoch"]
    return {
        "variant": variant.name, "backbone": cfg["model"]["backbone"], "loss": cfg["loss"],
        "trained_tags": int(len(run.tags) - subset.n_ratings), "scored_tags": len(base_tags),
        "f1_micro": m[policy.key]["f1_micro"], "f1_micro_lo": ci["f1_micro"][0], "f1_micro_hi": ci["f1_micro"][1],
        "f1_macro": m[policy.key]["f1_macro"], "f1_macro_lo": ci["f1_macro"][0], "f1_macro_hi": ci["f1_macro"][1],
        "f1_micro_all_its_tags": full[policy.key]["f1_micro"], "f1_macro_all_its_tags": full[policy.key]["f1_macro"],
        "test_images": int(m["n_images"]), "same_test_images": variant.subset == "base",
        "params": int(trained["params"]), "model_mb": round(run.model_path.stat().st_size / 1e6, 1),
        "train_img_s": round(subset.split_size("train") * epochs / trained["seconds"], 1) if epochs else None,
        "epochs": int(trained["epochs_done"]), "seconds": trained["seconds"], "run": str(run),
    }


def run_ablation(variants: list[Variant], subsets: dict[str, str | Path], out: str | Path, profile: str,
                 epochs: int, policy: str = "global", n_boot: int = 1000,
                 image_size: int | None = None, verbose: int | str = 0) -> pd.DataFrame:
    """Train and evaluate each variant (those already done are read back); one row each.

    `subsets`: the subset folder of each `Variant.subset` name ("base" is required); `epochs`:
    the one budget every variant gets; `policy`: a name in `policies.table()`."""
    from animetag.training.fit import train

    out = Path(out)
    pol = policies.get(policy)
    folders = {k: SubsetFolder(v) for k, v in subsets.items()}
    base = folders["base"]
    base_tags = tag_rows(base.tags)["name"].tolist()
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / RECORD
    done = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
    rows = []
    for v in variants:
        if v.subset not in folders:
            raise ValueError(f"variant {v.name!r}: no subset named {v.subset!r} (given: {sorted(folders)})")
        subset = folders[v.subset]
        overrides = deep_merge({"epochs": epochs, **({"image_size": image_size} if image_size else {})}, v.changes)
        settings = {"train": train_config(profile, **overrides).to_dict(), "subset": str(subset),
                    "subset_signature": data_signature(subset), "policy": pol.key, "n_boot": n_boot}
        run = RunFolder(out / v.slug)
        old = done.get(v.name)
        if old and old.get("settings") == settings and run.model_path.exists():
            rows.append(old["row"])
            print(f"{v.name}: done before, read back from {record_path}")
            continue
        if old and old.get("settings", {}).get("train") != settings["train"] and run.path.exists():
            shutil.rmtree(run.path)  # other settings: another run (train() would refuse to mix them)
        print(f"{v.name}: training {epochs} epochs in {run}")
        trained = train(subset, run, profile=profile, verbose=verbose, **overrides)
        row = _row(v, run, subset, base_tags, trained, pol, n_boot)
        rows.append(row)
        done[v.name] = {"settings": settings, "row": row}
        write_json_atomic(record_path, done)  # after each variant: an interrupted study resumes
    df = pd.DataFrame(rows)
    return _paired_differences(df, variants, folders, base_tags, pol, n_boot)


def _predictions(run: RunFolder, subset: SubsetFolder, names: list[str], policy: policies.ThresholdPolicy):
    """(test labels, test predictions) over `names` under `policy`, thresholds tuned on val."""

    y_val, s_val = _scores_on(run, subset, names, "val")
    y, s = _scores_on(run, subset, names, "test")
    return y, s >= np.asarray(policy.threshold(tune_thresholds(y_val, s_val)))


def _paired_differences(df: pd.DataFrame, variants: list[Variant], folders: dict[str, SubsetFolder],
                        base_tags: list[str], policy: policies.ThresholdPolicy, n_boot: int) -> pd.DataFrame:
    """Each variant's F1 minus the first row's, on the same test images, with a paired
    bootstrap interval (from the saved scores; none for a variant on another subset)."""

    for k in ("f1_micro", "f1_macro"):
        for suffix in ("", "_lo", "_hi"):
            df[f"delta_{k}{suffix}"] = np.nan
    if variants[0].subset != "base":
        return df
    y, ref = _predictions(RunFolder(df.loc[0, "run"]), folders["base"], base_tags, policy)
    for i, v in enumerate(variants):
        if v.subset != "base":
            continue
        yi, pred = (y, ref) if i == 0 else _predictions(RunFolder(df.loc[i, "run"]), folders["base"], base_tags, policy)
        assert np.array_equal(yi, y)  # the same images in the same order
        d = paired_bootstrap_diff(y, ref, pred, n_boot=n_boot)
        for k in ("f1_micro", "f1_macro"):
            df.loc[i, [f"delta_{k}", f"delta_{k}_lo", f"delta_{k}_hi"]] = d[k]
    return df


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """The rows for reading: F1 with its 95% interval, parameters (millions), model size,
    training speed, and a note where the test images differ."""
    def ci(r, k):
        return f"{r[k]:.3f} ({r[k + '_lo']:.3f}-{r[k + '_hi']:.3f})"

    t = pd.DataFrame({
        "F1-micro (95% CI)": [ci(r, "f1_micro") for _, r in df.iterrows()],
        "F1-macro (95% CI)": [ci(r, "f1_macro") for _, r in df.iterrows()],
        "tags trained / scored": [f"{a} / {b}" for a, b in zip(df["trained_tags"], df["scored_tags"])],
        "params (M)": (df["params"] / 1e6).round(2),
        "model.keras (MB)": df["model_mb"],
        "ΔF1-macro vs first row (paired 95% CI)": [
            "" if pd.isna(r.get("delta_f1_macro")) or i == 0 else
            f"{r['delta_f1_macro']:+.3f} ({r['delta_f1_macro_lo']:+.3f} to {r['delta_f1_macro_hi']:+.3f})"
            for i, (_, r) in enumerate(df.iterrows())],
        "train img/s": df["train_img_s"],
        "note": ["" if same else "its own subset's test images" for same in df["same_test_images"]],
    })
    t.index = df["variant"]
    return t


def best_by(df: pd.DataFrame, key: str = "f1_macro") -> str:
    """The variant with the highest `key`, and whether the paired bootstrap tells it apart
    from the first row (the thesis model) on the same test images."""
    i = int(np.argmax(df[key].to_numpy()))
    best = df.iloc[i]
    head = f"highest {key}: {best['variant']} ({best[key]:.3f})"
    if i == 0:
        return head + ", the first row itself"
    lo, hi = best.get(f"delta_{key}_lo", np.nan), best.get(f"delta_{key}_hi", np.nan)
    if pd.isna(lo):
        return head + "; on other test images, so not paired with the first row"
    verdict = "above the first row's" if lo > 0 else "not told apart from the first row's"
    return head + f"; {best[f'delta_{key}']:+.3f} (paired 95% CI {lo:+.3f} to {hi:+.3f}): {verdict}"
