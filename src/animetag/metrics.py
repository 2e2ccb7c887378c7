"""The F1 arithmetic every stage scores with (numpy and scikit-learn): F1 of predictions, threshold
tuning on kept scores, per-tag reports and bootstrap intervals. The Keras metrics logged while
training are `model.keras_metrics`."""

from __future__ import annotations

import numpy as np


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """F1-micro and F1-macro of binary predictions (a tag with no positive and no prediction
    scores 0 in the macro mean, as Keras' F1Score does)."""
    from sklearn.metrics import f1_score

    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    return {"f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
            "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def prior_baseline(y_train: np.ndarray, y_eval: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """F1 of scoring every image with each tag's training prior: a model that learnt nothing
    from the pixels. At 0.5 it predicts exactly the tags on more than half the images."""
    prior = np.asarray(y_train, dtype=float).mean(0)
    pred = np.broadcast_to(prior >= threshold, np.shape(y_eval))
    return f1_scores(y_eval, pred)


# -- evaluation on kept scores ---------------------------------------------------------

GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None):
    """Per-tag true positives, false positives and false negatives (optionally image-weighted)."""
    y, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    if weights is None:
        return (y & p).sum(0), (~y & p).sum(0), (y & ~p).sum(0)
    w = np.asarray(weights, dtype=np.float64)
    return w @ (y & p), w @ (~y & p), w @ (y & ~p)


def f1_from_counts(tp, fp, fn) -> tuple:
    """F1-micro and F1-macro from per-tag counts (last axis = tags); 0 where undefined."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    per_tag = np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)
    tps, dens = tp.sum(-1), denom.sum(-1)
    micro = np.divide(2 * tps, dens, out=np.zeros_like(dens), where=dens > 0)
    return micro, per_tag.mean(-1)


def f1_at(y_true: np.ndarray, scores: np.ndarray, threshold) -> dict[str, float]:
    """F1-micro and F1-macro with a global threshold or one threshold per tag."""
    micro, macro = f1_from_counts(*confusion(y_true, scores >= np.asarray(threshold)))
    return {"f1_micro": float(micro), "f1_macro": float(macro)}


def tune_global_threshold(y_true: np.ndarray, scores: np.ndarray, grid: np.ndarray = GRID) -> float:
    """The single threshold that maximises F1-micro (ties: the lower threshold)."""
    best = max(grid, key=lambda t: (f1_from_counts(*confusion(y_true, scores >= t))[0], -t))
    return float(best)


def tune_per_tag_thresholds(y_true: np.ndarray, scores: np.ndarray, fallback: float,
                            grid: np.ndarray = GRID, min_positives: int = 10, min_gain: float = 0.05) -> np.ndarray:
    """Per tag, the threshold that maximises that tag's F1, else `fallback` (the global
    threshold): where a tag has fewer than `min_positives` positives (too few to tune on),
    or where its best F1 does not beat tagging every image by `min_gain`. For a tag the
    model has not learnt, the F1-optimal threshold is one so low that the tag goes on every
    image; that helps the tag's F1 a little and costs F1-micro a lot."""
    y = np.asarray(y_true).astype(bool)
    best_f1 = np.full(y.shape[1], -1.0)
    best_t = np.full(y.shape[1], fallback, dtype=np.float64)
    for t in grid:
        tp, fp, fn = confusion(y, scores >= t)
        denom = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)
        better = f1 > best_f1 + 1e-12
        best_f1[better], best_t[better] = f1[better], t
    prevalence = y.mean(0)
    trivial = 2 * prevalence / (1 + prevalence)  # F1 of tagging every image
    best_t[(y.sum(0) < max(min_positives, 1)) | (best_f1 < trivial + min_gain)] = fallback
    return best_t


def precision_recall_equal_threshold(y_true: np.ndarray, scores: np.ndarray, grid: np.ndarray = GRID) -> float:
    """The global threshold where micro precision and recall are closest (the WD taggers' policy)."""
    def gap(t):
        tp, fp, fn = (a.sum() for a in confusion(y_true, scores >= t))
        if tp == 0:  # precision = recall = 0 is no operating point
            return np.inf
        return abs(tp / (tp + fp) - tp / (tp + fn))

    return float(min(grid, key=gap))


def per_tag_report(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Per tag: precision, recall, F1 at its threshold, and average precision (NaN without positives)."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y_true).astype(bool)
    tp, fp, fn = confusion(y, scores >= thresholds)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    ap = np.array([average_precision_score(y[:, j], scores[:, j]) if y[:, j].any() else np.nan
                   for j in range(y.shape[1])])
    return {"precision": precision, "recall": recall, "f1": f1, "ap": ap}


def bootstrap_f1_ci(y_true: np.ndarray, y_pred: np.ndarray, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap over images of F1-micro and F1-macro."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    out = {"f1_micro": [], "f1_macro": []}
    for start in range(0, n_boot, 200):
        k = min(200, n_boot - start)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=k)  # resample counts per image
        micro, macro = f1_from_counts(*confusion(y_true, y_pred, w))
        out["f1_micro"] += micro.tolist()
        out["f1_macro"] += macro.tolist()
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] for k, v in out.items()}


def paired_bootstrap_diff(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_boot: int = 1000,
                          seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """F1(b) - F1(a) for two predictions of the same images, with a percentile interval from
    one bootstrap that resamples the images of both together: [difference, low, high] for
    F1-micro and F1-macro. Narrower than comparing two separate intervals, since what both
    find hard or easy cancels out."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    a0, b0 = f1_from_counts(*confusion(y_true, pred_a)), f1_from_counts(*confusion(y_true, pred_b))
    point = {"f1_micro": b0[0] - a0[0], "f1_macro": b0[1] - a0[1]}
    out = {"f1_micro": [], "f1_macro": []}
    for start in range(0, n_boot, 200):
        k = min(200, n_boot - start)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=k)
        a = f1_from_counts(*confusion(y_true, pred_a, w))
        b = f1_from_counts(*confusion(y_true, pred_b, w))
        out["f1_micro"] += (b[0] - a[0]).tolist()
        out["f1_macro"] += (b[1] - a[1]).tolist()
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: [float(point[k]), float(np.percentile(v, lo)), float(np.percentile(v, hi))] for k, v in out.items()}
