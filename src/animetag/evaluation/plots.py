"""Figures for the notebooks; each returns the figure and can save it as PNG."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from animetag.metrics import GRID, f1_at
from animetag.model.policies import table


def _plt():
    import matplotlib

    if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class SavedFigure(os.PathLike):
    """Where a figure was saved; shown in a notebook as one line, not as a Path repr."""

    def __init__(self, path: Path):
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"figure saved: {self.path}"


def save(fig, folder: str | os.PathLike | None, name: str) -> SavedFigure | None:
    """Save `fig` as folder/name.png (when a folder is given); returns where.

    Returning the path rather than the figure keeps Jupyter from drawing it twice."""
    if folder is None:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return SavedFigure(path)


def rank_frequency(counts: pd.DataFrame, kept: int | None = None, n_posts: int | None = None):
    """Rank-frequency on log-log axes, one line per category, the kept top-K marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    denom = n_posts or 1
    all_c = counts["count"].to_numpy()
    ax.loglog(np.arange(1, len(all_c) + 1), all_c / denom, color="black", lw=2, label="all tags")
    for cat, g in counts.groupby("category", sort=False):
        c = g["count"].to_numpy()
        ax.loglog(np.arange(1, len(c) + 1), c / denom, lw=1, label=cat)
    if kept:
        ax.axvline(kept, color="red", ls="--", lw=1, label=f"top-{kept} cut")
    ax.set_xlabel("rank")
    ax.set_ylabel("share of posts" if n_posts else "posts")
    ax.set_title("Tag rank-frequency")
    ax.legend(fontsize=8)
    return fig


def top_by_category(counts: pd.DataFrame, k: int = 15, n_posts: int | None = None):
    plt = _plt()
    cats = [c for c in counts["category"].unique()]
    fig, axes = plt.subplots(1, len(cats), figsize=(3.2 * len(cats), 0.25 * k + 1.5), squeeze=False)
    for ax, cat in zip(axes[0], cats):
        g = counts[counts["category"] == cat].head(k)[::-1]
        ax.barh(g["name"], g["count"] / (n_posts or 1))
        ax.set_title(cat)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"Top-{k} tags by category" + (" (share of posts)" if n_posts else ""))
    fig.tight_layout()
    return fig


def positive_rates(rates: pd.DataFrame):
    """Positive rate per kept tag (sorted), with the imbalance ratio on a second axis."""
    plt = _plt()
    r = rates.sort_values("rate", ascending=False)
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(r))
    ax.bar(x, r["rate"], width=1.0)
    ax.set_yscale("log")
    ax.set_xlabel("kept tag, by frequency")
    ax.set_ylabel("positive rate (log)")
    ax2 = ax.twinx()
    ax2.plot(x, r["imbalance_ratio"], color="red", lw=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("negatives / positives", color="red")
    ax.set_title("Class imbalance of the kept tags")
    return fig


def tags_per_image(hist: pd.Series):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(hist.index, hist.values)
    ax.set_xlabel("kept tags per image")
    ax.set_ylabel("images")
    ax.set_title("Tags per image")
    return fig


def conditional_heatmap(P: np.ndarray, names: list[str], top: int = 30):
    plt = _plt()
    k = min(top, len(names))
    fig, ax = plt.subplots(figsize=(0.28 * k + 2.5, 0.28 * k + 2))
    shown = np.array(P[:k, :k], dtype=float)
    np.fill_diagonal(shown, np.nan)  # P(a|a) = 1 says nothing
    im = ax.imshow(shown, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(k), names[:k], rotation=90, fontsize=7)
    ax.set_yticks(range(k), names[:k], fontsize=7)
    ax.set_xlabel("tag b")
    ax.set_ylabel("tag a")
    ax.set_title("P(b | a) for the top tags")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return fig


def wrap_caption(text: str, width: int = 36, max_lines: int = 7) -> str:
    """A caption broken into lines that fit one panel, at most `max_lines` (then an ellipsis)."""

    lines = [w for part in text.split("\n") for w in (textwrap.wrap(part, width) or [""])]
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [lines[max_lines - 1].rstrip(",") + " ..."]
    return "\n".join(lines)


def image_grid(images: list[np.ndarray], captions: list[str], cols: int = 4, title: str = ""):
    """Images in a grid, each with its caption wrapped to the panel's width."""
    plt = _plt()
    rows = max(1, int(np.ceil(len(images) / cols)))
    wrapped = [wrap_caption(c) for c in captions]
    n_lines = max((c.count("\n") + 1 for c in wrapped), default=1)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, (3.4 + 0.16 * n_lines) * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im, cap in zip(axes.ravel(), images, wrapped):
        ax.imshow(im)
        ax.set_title(cap, fontsize=7, loc="left")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if title else 1))
    return fig


def history(hist: pd.DataFrame, baseline: dict[str, float] | None = None):
    """Loss per epoch on a log axis with the learning rate beside it, and the validation
    metrics with the best epoch (by validation F1-macro, the one model.keras keeps) marked."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    ep = hist["epoch"] + 1
    a1.plot(ep, hist["loss"], label="train loss")
    if "val_loss" in hist:
        a1.plot(ep, hist["val_loss"], label="validation loss")
    a1.set_yscale("log")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss (log scale)")
    handles, labels = a1.get_legend_handles_labels()
    if "learning_rate" in hist:
        lr = a1.twinx()
        (line,) = lr.plot(ep, hist["learning_rate"], color="grey", ls=":", label="learning rate")
        lr.set_ylabel("learning rate")
        handles, labels = handles + [line], labels + ["learning rate"]
    a1.legend(handles, labels, fontsize=8)
    for col in ("val_f1_micro", "val_f1_macro", "val_pr_auc", "val_rating_accuracy"):
        if col in hist:
            a2.plot(ep, hist[col], marker="o", ms=3, label=col)
    for name, v in (baseline or {}).items():
        a2.axhline(v, ls="--", lw=1, color="grey")
        a2.text(ep.iloc[0], v, name, fontsize=7, va="bottom")
    if "val_f1_macro" in hist and len(hist):
        best = int(hist["val_f1_macro"].idxmax())
        a2.axvline(ep.iloc[best], color="black", lw=0.8)
        a2.text(ep.iloc[best], 0.97, f" best epoch {ep.iloc[best]}", fontsize=7, va="top")
    a2.set_xlabel("epoch")
    a2.set_ylim(0, 1)
    a2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def threshold_policies(metrics: dict):
    """F1-micro and F1-macro at 0.5 against the tuned thresholds."""
    plt = _plt()

    names = [p.key for p in table()]
    labels = [p.name if p.fixed else f"{p.name} (val)" for p in table()]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(names))
    for key, off in (("f1_micro", -0.2), ("f1_macro", 0.2)):
        vals = [metrics[n][key] for n in names]
        ax.bar(x + off, vals, width=0.4, label=key)
        for xi, v in zip(x + off, vals):
            ax.text(xi, v + 0.01, f"{v:.3f}", ha="center", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_ylabel("F1 on the reported split")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Fixed 0.5 against thresholds tuned on validation")
    return fig


def f1_vs_frequency(per_tag: pd.DataFrame, f1_col: str = "f1"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(per_tag["train_positives"], per_tag[f1_col], s=14, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("training positives (log)")
    ax.set_ylabel(f"per-tag {f1_col}")
    ax.set_ylim(-0.02, 1.02)
    for _, r in per_tag.nsmallest(5, "train_positives").iterrows():
        ax.annotate(r["tag"], (r["train_positives"], r[f1_col]), fontsize=7)
    ax.set_title("Per-tag F1 against tag frequency")
    return fig


def pr_curves(y: np.ndarray, scores: np.ndarray, names: list[str], tags: list[str]):
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for t in tags:
        j = names.index(t)
        if not y[:, j].any():
            continue
        p, r, _ = precision_recall_curve(y[:, j], scores[:, j])
        ax.plot(r, p, label=f"{t} (AP {average_precision_score(y[:, j], scores[:, j]):.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Precision-recall curves")
    return fig


def lift_heatmap(lift: np.ndarray, names: list[str]):
    """log2 lift (pointwise mutual information) of every kept tag pair, diagonal masked:
    red pairs come together more than chance, blue ones avoid each other."""
    plt = _plt()
    k = len(names)
    side = min(0.13 * k + 3, 16)
    fig, ax = plt.subplots(figsize=(side, side))
    with np.errstate(divide="ignore"):
        pmi = np.log2(lift)
    im = ax.imshow(np.clip(pmi, -3, 3), vmin=-3, vmax=3, cmap="RdBu_r")
    fs = 7 if k <= 40 else 4.5
    ax.set_xticks(range(k), names, rotation=90, fontsize=fs)
    ax.set_yticks(range(k), names, fontsize=fs)
    ax.set_title("log2 lift of each tag pair (diagonal masked)")
    fig.colorbar(im, ax=ax, fraction=0.03, label="log2 P(a,b) / P(a)P(b)")
    fig.tight_layout()
    return fig


def f1_vs_threshold(y: np.ndarray, scores: np.ndarray, marks: dict[str, float]):
    """F1-micro and F1-macro of one global threshold across the range, with chosen
    thresholds marked: how flat the optimum is, and what 0.5 gives away."""

    plt = _plt()
    f = [f1_at(y, scores, t) for t in GRID]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(GRID, [r["f1_micro"] for r in f], label="F1-micro")
    ax.plot(GRID, [r["f1_macro"] for r in f], label="F1-macro")
    for name, t in marks.items():
        ax.axvline(t, ls=":", color="grey", lw=1)
        ax.text(t, 0.98, f" {name}", rotation=90, fontsize=7, va="top")
    ax.set_xlabel("global threshold")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("F1 against one global threshold")
    return fig


def f1_by_frequency(per_tag: pd.DataFrame, f1_col: str = "f1"):
    """Per-tag F1 as bars, tags ordered from the most to the least frequent."""
    plt = _plt()
    d = per_tag.sort_values("train_positives", ascending=False)
    fig, ax = plt.subplots(figsize=(max(7, 0.12 * len(d) + 2), 4))
    ax.bar(range(len(d)), d[f1_col], color=["tab:orange" if c == "character" else "tab:blue" for c in d["category"]])
    ax.set_xticks(range(len(d)), d["tag"], rotation=90, fontsize=5 if len(d) > 40 else 7)
    ax.set_ylabel(f"per-tag {f1_col}")
    ax.set_ylim(0, 1)
    ax.set_title("Per-tag F1, most frequent tag first (orange: characters)")
    fig.tight_layout()
    return fig


def ablation(df: pd.DataFrame, policy_label: str = ""):
    """Each variant's F1-micro and F1-macro with their 95% bootstrap intervals (left), and
    what it costs (right): training images per second, parameters and model size."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.55 * len(df) + 1.8), sharey=True,
                                 gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(df))[::-1]
    for key, off, colour in (("f1_micro", 0.15, "C0"), ("f1_macro", -0.15, "C1")):
        lo = df[key] - df[f"{key}_lo"]
        hi = df[f"{key}_hi"] - df[key]
        a1.errorbar(df[key], y + off, xerr=[lo, hi], fmt="o", color=colour, capsize=3, label=key)
        a1.axvline(df[key].iloc[0], color=colour, lw=0.6, ls=":")
    a1.set_yticks(y, df["variant"])
    a1.set_xlabel(f"F1 on the test split{' (' + policy_label + ')' if policy_label else ''}, 95% bootstrap CI")
    a1.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    speed = df["train_img_s"].astype(float).fillna(0.0)
    a2.barh(y, speed, color="C2", height=0.5)
    for yi, v, (_, r) in zip(y, speed, df.iterrows()):
        a2.text(v, yi, f" {r['params'] / 1e6:.2f}M params, {r['model_mb']:.0f} MB", va="center", fontsize=7)
    a2.set_xlim(0, max(speed.max(), 1e-9) * 1.9)
    a2.set_xlabel("training images / s (whole run)")
    fig.tight_layout()
    return fig


def comparison(result: dict):
    """Each tagger's F1 minus the run's on the same images and shared tags, under each
    threshold policy (and its published thresholds), with the paired 95% interval: right of
    the line, the tagger is ahead. F1-micro left, F1-macro right."""
    plt = _plt()
    rows = []
    for t in result["taggers"]:
        if "tagger" not in t:
            continue
        label = f"{t['name']} ({t['shared_tags']} tags)"
        for key in result["policies"]:
            rows.append((label, key, t["tagger"][key]["minus_run"]))
        if "published" in t:
            rows.append((label, "published", t["published"]["minus_run"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * max(len(rows), 1) + 1.6), sharey=True)
    y = np.arange(len(rows))[::-1]
    for ax, key in zip(axes, ("f1_micro", "f1_macro")):
        d = np.array([r[2][key] for r in rows]).reshape(-1, 3)
        ax.errorbar(d[:, 0], y, xerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]], fmt="o", capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"Δ{key.replace('f1_', 'F1-')}: tagger minus run (paired 95% CI)")
    axes[0].set_yticks(y, [f"{r[0]} · {r[1]}" for r in rows], fontsize=8)
    fig.suptitle(f"on {result['images']['test']} images: {result['images']['test_from']}", fontsize=9)
    fig.tight_layout()
    return fig
