"""Evaluation like for like: predict validation and test once, tune thresholds on validation
only, report the chosen split at 0.5, at one global threshold and at per-tag thresholds,
with bootstrap confidence intervals, a per-tag report and the published comparison."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from animetag.config import RATING_NAMES
from animetag.data.loader import SplitLoader
from animetag.data.subset import label_matrix
from animetag.data.tag_stats import conditional_matrix
from animetag.evaluation.published import comparison_rows
from animetag.folders import (
    RunFolder,
    SubsetFolder,
    cached_arrays,
    data_differences,
    data_signature,
    fingerprint,
    run_lock,
    trained_on,
    write_csv_atomic,
    write_json_atomic,
)
from animetag.locks import folder_lock
from animetag.metrics import bootstrap_f1_ci, f1_at, paired_bootstrap_diff, per_tag_report
from animetag.model import policies
from animetag.vocab import category_name, n_ratings, rating_labels, split_outputs, tag_rows


class DataMismatch(ValueError):
    """A run asked to be evaluated on data other than the subset it was trained on."""


def check_run_data(data: str | os.PathLike | SubsetFolder, run: str | os.PathLike | RunFolder) -> dict[str, Any]:
    """The subset's signature, after checking that it is the one `run` was trained on."""

    now = data_signature(data)
    recorded = (RunFolder.of(run).config or {}).get("data", {})
    changes = data_differences(recorded, now)
    if changes:
        raise DataMismatch(f"{run} was trained on other data than {data}; evaluate it on the subset it was "
                           "trained on. Differences (trained on -> given):\n  " + "\n  ".join(changes))
    return now


def _cache_key(model_path: Path, signature: dict[str, Any], data: SubsetFolder) -> str:
    """What a split's saved scores depend on: the model file, the tag list and split, and the
    shard files the images are read from (path, size, modification time)."""
    shards = sorted((data / "shards").rglob("*")) if (data / "shards").is_dir() else []
    return (f"{fingerprint([model_path])}:{signature.get('tags_sha1')}:{signature.get('split_sha1')}:"
            f"{fingerprint(p for p in shards if p.is_file())}")


def predict_split(data: str | os.PathLike | SubsetFolder, run: str | os.PathLike | RunFolder, split: str,
                  batch_size: int = 64, signature: dict[str, Any] | None = None,
                  model=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, scores) of a split, cached in the run folder as scores_<split>.npz; the
    cache is used only for the same model.keras and the same data (tag list and split).
    `model`: the model to use (else the run's model.keras, loaded once per RunFolder when the
    cache cannot serve)."""
    data, run = SubsetFolder.of(data), RunFolder.of(run)
    cache = run / f"scores_{split}.npz"
    model_path = run.require_model()
    if signature is None:

        signature = data_signature(data)
    key = _cache_key(model_path, signature, data)
    z = cached_arrays(cache, key, lambda: dict(zip(("ids", "labels", "scores"),
                                                   predict(model or run.model, data, split, batch_size))))
    return z["ids"], z["labels"], z["scores"]


def predict(model, data: SubsetFolder, split: str, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, scores) of a split under `model`, uncached."""
    import keras

    size = int(model.input_shape[1])
    ids, ys, ss = [], [], []
    # one pass: read and decoded batch by batch, a few ahead (a cache would only hold memory)
    for x, y, pid in SplitLoader(data, split, batch_size, size, with_ids=True, cache="off").epoch():
        ss.append(np.asarray(keras.ops.convert_to_numpy(model(keras.ops.cast(x, "float32"), training=False)),
                             dtype=np.float32))
        ys.append(y.astype(np.uint8))
        ids.append(pid)
    return np.concatenate(ids), np.concatenate(ys), np.concatenate(ss)


F1 = ("f1_micro", "f1_macro")


def policy_f1(y: np.ndarray, s: np.ndarray, th: dict[str, Any]) -> dict[str, dict[str, float]]:
    """F1-micro and F1-macro of (y, s) under each policy."""
    return {p.key: f1_at(y, s, p.threshold(th)) for p in policies.table()}


def tune_thresholds(y_val: np.ndarray, s_val: np.ndarray) -> dict[str, Any]:
    """Every policy's thresholds, from validation data alone."""
    return policies.tune_all(y_val, s_val)


def evaluate_scores(y_val, s_val, y, s, n_boot: int = 1000, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics on (y, s) with thresholds tuned on (y_val, s_val) only; returns (metrics, thresholds)."""
    th = tune_thresholds(y_val, s_val)
    f1 = policy_f1(y, s, th)
    rep = per_tag_report(y, s, per_tag_thresholds(th))
    table = policies.table()
    ci = {p.key: bootstrap_f1_ci(y, s >= p.threshold(th), n_boot=n_boot, seed=seed) for p in table}
    reported = policies.get(policies.DEFAULT_TAGGING).key
    metrics = {"n_images": int(len(y)), "n_tags": int(y.shape[1])}
    for p in table:  # one threshold for every tag: stated beside its F1
        one = not p.fixed and np.ndim(p.threshold(th)) == 0
        metrics[p.key] = {**({"threshold": float(p.threshold(th))} if one else {}), **f1[p.key]}
    metrics.update({"map": float(np.nanmean(rep["ap"])), "ci95": ci[reported], "ci95_policy": reported,
                    "ci95_by_policy": ci, "thresholds_tuned_on": "val"})
    return metrics, th


def per_tag_thresholds(th: dict[str, Any]) -> np.ndarray:
    """The per-tag policy's thresholds from freshly tuned ones (per_tag.csv's column)."""
    return np.asarray(policies.get("per-tag").threshold(th))


def rating_metrics(y_rating: np.ndarray, s_rating: np.ndarray) -> dict[str, Any]:
    """The rating head on images with a rating: accuracy of the highest score, F1 per rating
    and their mean, and the confusion matrix (rows: true rating, columns: predicted)."""
    from sklearn.metrics import confusion_matrix, f1_score

    names = list(RATING_NAMES.values())
    true = rating_labels(y_rating, len(names))
    rated = true >= 0
    t, p = true[rated], np.asarray(s_rating)[rated].argmax(1)
    labels = list(range(len(names)))
    per = f1_score(t, p, labels=labels, average=None, zero_division=0) if len(t) else np.zeros(len(names))
    majority = np.bincount(t, minlength=len(names)).max() / len(t) if len(t) else 0.0
    return {"n_rated_images": int(rated.sum()), "n_unrated_images": int((~rated).sum()),
            "accuracy": float((t == p).mean()) if len(t) else float("nan"),
            "majority_baseline": float(majority),
            "f1_macro": float(np.mean(per)), "f1": dict(zip(names, map(float, per))),
            "confusion": {"labels": names,
                          "matrix": confusion_matrix(t, p, labels=labels).tolist() if len(t) else []}}


def by_category(tags: pd.DataFrame, y: np.ndarray, s: np.ndarray, th: dict[str, Any]) -> dict[str, Any]:
    """F1 of each tag category on its own (the published figures are per category, e.g.
    Camie's general row) under the same thresholds as all tags together."""
    cats = np.array([category_name(c) for c in tags["category"]])
    out = {}
    for cat in dict.fromkeys(cats):
        j = cats == cat
        per_cat = {k: v[j] if np.ndim(v) else v for k, v in th.items()}
        out[str(cat)] = {"n_tags": int(j.sum()), **policy_f1(y[:, j], s[:, j], per_cat)}
    return out


def likely_cause(report: pd.DataFrame, Y_train: np.ndarray, rare_below: int = 50, implied_p: float = 0.95) -> list[str]:
    """A short guess at why a tag scores badly: rare, no visual signal, implied by another tag."""

    P = conditional_matrix(Y_train)
    np.fill_diagonal(P, 0)
    names = report["tag"].tolist()
    out = []
    for j, row in report.iterrows():
        why = []
        if row["train_positives"] < rare_below:
            why.append("rare")
        prior = row["train_positives"] / max(len(Y_train), 1)
        if np.isfinite(row["ap"]) and row["ap"] < 1.5 * prior + 0.02:
            why.append("no visual signal learnt (AP near its prior)")
        parents = [names[a] for a in np.flatnonzero(P[:, j] >= implied_p) if Y_train[:, a].sum() >= 5]
        if parents:
            why.append("implied by " + ", ".join(parents[:3]))
        out.append("; ".join(why))
    return out


def evaluate(data: str | os.PathLike, run: str | os.PathLike, split: str = "test", n_boot: int = 1000,
             data_kind: str | None = None) -> dict[str, Any]:
    """Evaluate `run` on `split` of `data`; writes metrics.json, per_tag.csv, thresholds.json.
    Holds the run's lock, as training does."""

    with folder_lock(run_lock(run), "animetag evaluate"):
        return _evaluate(SubsetFolder.of(data), RunFolder.of(run), split, n_boot, data_kind)


def _evaluate(data: SubsetFolder, run: RunFolder, split: str, n_boot: int, data_kind: str | None) -> dict[str, Any]:
    if split == "val":
        raise ValueError("thresholds are tuned on 'val', so 'val' cannot be the reported split; use 'test'")
    signature = check_run_data(data, run)
    all_rows, manifest, summary = data.read()
    n_rat = data.n_ratings
    tags = tag_rows(all_rows)
    model = run.model  # loaded once, for both splits and its size
    _, y_val_all, s_val_all = predict_split(data, run, "val", signature=signature, model=model)
    ids, y_all, s_all = predict_split(data, run, split, signature=signature, model=model)
    # the rating head is judged as a 4-way choice; every metric below is over the tag rows
    (_, y_val), (_, s_val) = split_outputs(y_val_all, n_rat), split_outputs(s_val_all, n_rat)
    (y_rating, y), (s_rating, s) = split_outputs(y_all, n_rat), split_outputs(s_all, n_rat)
    metrics, th = evaluate_scores(y_val, s_val, y, s, n_boot=n_boot)
    metrics = {"split": split, **metrics}
    cats = by_category(tags, y, s, th)
    metrics["by_category"] = cats
    if n_rat:
        metrics["rating"] = rating_metrics(y_rating, s_rating)

    Y_train = split_outputs(label_matrix(manifest, all_rows)[manifest["split"].to_numpy() == "train"], n_rat)[1]
    rep = per_tag_report(y, s, per_tag_thresholds(th))
    per_tag = pd.DataFrame({
        "tag": tags["name"], "category": [category_name(c) for c in tags["category"]],
        "train_positives": Y_train.sum(0), f"{split}_positives": y.sum(0).astype(int),
        "precision": rep["precision"], "recall": rep["recall"], "f1": rep["f1"], "ap": rep["ap"],
        "threshold": per_tag_thresholds(th), "f1_at_0.5": per_tag_report(y, s, np.full(y.shape[1], 0.5))["f1"],
    })
    per_tag["likely_cause"] = likely_cause(per_tag, Y_train)
    write_csv_atomic(run / run.PER_TAG, per_tag)

    thresholds = {"tuned_on": "val", **{k: dict(zip(tags["name"], map(float, v))) if np.ndim(v) else float(v)
                                        for k, v in th.items()}}
    write_json_atomic(run / run.THRESHOLDS, thresholds)

    if (run.config or {}).get("parent"):
        metrics["fine_tuned"] = forgetting(run, data, split, tags["name"].tolist(), y_val, s_val, y, s, n_boot)
    kind = data_label(summary)
    params = int(model.count_params())
    run_rows = _run_rows(metrics, th, {"data": data_kind or kind, "n_test_images": len(y), "params": params,
                                       "size_mb": round(run.model_path.stat().st_size / 1e6, 1)}, tags)
    metrics["comparison"] = comparison_rows(run_rows)
    write_json_atomic(run / run.METRICS, metrics)
    return metrics


def forgetting(run: RunFolder, data: SubsetFolder, split: str, names: list[str], y_val: np.ndarray,
               s_val: np.ndarray, y: np.ndarray, s: np.ndarray, n_boot: int) -> dict[str, Any]:
    """A fine-tuned run (`--init-from`): its old tags (those it took from its parent) and its
    new tags scored apart, and the parent scored on the same images over the old tags, each
    with thresholds tuned on this subset's validation split; the old tags' change from the
    parent with a paired bootstrap interval (the same images): what fine-tuning cost them."""
    info = run.config["parent"]
    parent = RunFolder(info["run"])
    old = [j for j, n in enumerate(names) if n in set(info["from_parent"])]
    new = [j for j, n in enumerate(names) if n in set(info["new"])]
    policy = policies.get(policies.DEFAULT_TAGGING)

    def scored(yv, sv, yt, st) -> dict[str, Any]:
        th = policies.tune_all(yv, sv)
        return {"n_tags": int(yt.shape[1]), **policy_f1(yt, st, th), "_pred": st >= np.asarray(policy.threshold(th))}

    out: dict[str, Any] = {"parent": str(parent.path), "policy": policy.key,
                           "old_tags": scored(y_val[:, old], s_val[:, old], y[:, old], s[:, old]),
                           "new_tags": scored(y_val[:, new], s_val[:, new], y[:, new], s[:, new]),
                           "parent_trained_on_test": trained_on(parent, data, split)}
    leak = out["parent_trained_on_test"]
    if leak.get("trained_on"):
        warnings.warn(f"the parent {parent} trained on {leak['trained_on']} of the {leak['images']} {split} images: "
                      "its old tags' F1 there is optimistic and the change from it too. Build the fine-tuned "
                      "run's subset with --splits-from the parent's subset", stacklevel=2)
    if parent.model_path.exists() and old:
        theirs = tag_rows(parent.tags)["name"].tolist()
        cols = [theirs.index(names[j]) + n_ratings(parent.tags) for j in old]
        model = parent.model
        pv, pt = predict(model, data, "val")[2][:, cols], predict(model, data, split)[2][:, cols]  # nothing cached there
        out["parent_old_tags"] = scored(y_val[:, old], pv, y[:, old], pt)
        out["old_tags_change"] = paired_bootstrap_diff(y[:, old], out["parent_old_tags"]["_pred"],
                                                       out["old_tags"]["_pred"], n_boot=n_boot)
        out["old_tags_change_note"] = ("this run minus its parent on the same test images, over the tags both "
                                       "know, thresholds tuned on this subset's validation split; "
                                       "[difference, low, high] of a paired 95% bootstrap")
    for k in ("old_tags", "new_tags", "parent_old_tags"):
        if k in out:
            out[k].pop("_pred")
    return out


def _run_rows(metrics: dict[str, Any], th: dict[str, Any], base: dict[str, Any], tags: pd.DataFrame) -> list[dict]:
    """This run's rows for the comparison: over all its tags, and, where the subset keeps
    several categories, over its general tags alone (what the thesis and Camie's row measure)."""
    def rows(name: str, m: dict[str, Any], n_tags: int, cats: str) -> list[dict]:
        b = {**base, "n_tags": n_tags, "categories": cats}
        return [{"model": f"this run{name} @{p.name}", **b, "threshold": p.describe(th), "policy_kind": p.kind,
                 **{k: m[p.key][k] for k in F1}} for p in policies.table()]

    cats = metrics["by_category"]
    names = " + ".join(cats)
    out = rows("", metrics, len(tags), f"{names} (top-{len(tags)})")
    if len(cats) > 1 and "general" in cats:
        out += rows(" (general)", cats["general"], cats["general"]["n_tags"],
                    f"general (top-{cats['general']['n_tags']})")
    return out


def data_label(summary: dict[str, Any]) -> str:
    """What a subset's images and tags are, from what its subset.json records about its source:
    the built-in sample; Danbooru metadata with tag categories (the thesis's kind of data); or
    flat tag strings, whose categories had to be guessed or looked up."""
    if (Path(summary.get("images_root", "")) / "sample.json").exists():
        return "sample (synthetic)"
    names = ", ".join(Path(p).name for p in summary.get("metadata", [])) or "unknown metadata"
    if summary.get("warnings") or summary.get("settings", {}).get("tag_table"):
        return f"flat-tag metadata ({names}; categories not from the source)"
    return f"Danbooru metadata with tag categories ({names})"


def comparison_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """The published rows beside this run's: F1 rounded to 3 places, test images, tags,
    parameters and model size as whole numbers ('' where a source does not say)."""
    cols = ["model", "f1_micro", "f1_macro", "data", "n_test_images", "n_tags", "categories", "threshold",
            "params", "size_mb", "like_for_like", "why", "source"]
    df = pd.DataFrame(metrics["comparison"])
    df = df[[c for c in cols if c in df]].copy()
    for c in ("f1_micro", "f1_macro"):
        df[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    for c in ("n_test_images", "n_tags", "params"):
        if c in df:
            df[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    if "size_mb" in df:
        df["size_mb"] = df["size_mb"].map(lambda v: "" if pd.isna(v) else f"{v:,.1f}")
    for c in ("like_for_like", "why"):
        if c in df:
            df[c] = df[c].map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
    return df


def policy_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """F1 of the reported split under each threshold policy, with its threshold, rounded."""
    rows = {p.label: {"threshold": f"{metrics[p.key]['threshold']:.2f}" if "threshold" in metrics[p.key] else
                      p.describe({}) if p.fixed else "per tag",
                      **{k: metrics[p.key][k] for k in F1}} for p in policies.table()}
    return pd.DataFrame(rows).T.astype({"f1_micro": float, "f1_macro": float}).round(3)
