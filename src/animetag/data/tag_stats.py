"""Tag statistics: counts per category, rank-frequency slopes, positive rates and imbalance
ratios, tags per image, co-occurrence and near-implications (the pseudo-hierarchy)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from animetag.config import CATEGORIES
from animetag.data.danbooru import tag_list


def tag_counts(posts: pd.DataFrame, categories: Iterable[str] = CATEGORIES) -> pd.DataFrame:
    """Every tag's post count: columns name, category, count, rank (1 = most frequent)."""
    rows = []
    for c in categories:
        col = f"tags_{c}"
        if col not in posts:
            continue
        cnt = Counter(t for s in posts[col] for t in set(tag_list(s)))
        rows += [(t, c, n) for t, n in cnt.items()]
    df = pd.DataFrame(rows, columns=["name", "category", "count"])
    df = df.sort_values(["count", "name"], ascending=[False, True], kind="stable").reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    df["share"] = df["count"] / max(len(posts), 1)
    return df


def rank_frequency_slope(counts: np.ndarray, first: int = 1, last: int = 100) -> float:
    """Least-squares slope of log(count) against log(rank) over ranks first..last."""
    c = np.sort(np.asarray(counts, dtype=float))[::-1][first - 1: last]
    c = c[c > 0]
    if len(c) < 2:
        return float("nan")
    r = np.arange(first, first + len(c))
    return float(np.polyfit(np.log(r), np.log(c), 1)[0])


def positive_rates(Y: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Per tag: positives, positive rate, and the imbalance ratio negatives / positives."""
    pos = Y.sum(0).astype(int)
    n = len(Y)
    rate = pos / max(n, 1)
    with np.errstate(divide="ignore"):
        ratio = np.where(pos > 0, (n - pos) / np.maximum(pos, 1), np.inf)
    return pd.DataFrame({"name": names, "positives": pos, "rate": rate, "imbalance_ratio": ratio})


def conditional_matrix(Y: np.ndarray) -> np.ndarray:
    """P(column tag | row tag): co-occurrence counts divided by the row tag's count."""
    Yf = Y.astype(np.float64)
    co = Yf.T @ Yf
    n = np.diag(co).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n[:, None] > 0, co / n[:, None], 0.0)


def near_implications(Y: np.ndarray, names: list[str], min_p: float = 0.9, min_count: int = 5,
                      min_lift: float = 1.2) -> pd.DataFrame:
    """Pairs a -> b with P(b|a) >= min_p (a seen at least min_count times): the pseudo-hierarchy.
    A b on most images (`solo`) follows every a without being implied by it: pairs whose lift
    is below `min_lift` are left out."""
    P = conditional_matrix(Y)
    lift = lift_matrix(Y)
    n = Y.sum(0)
    rows = [(names[a], names[b], P[a, b], lift[a, b], int(n[a]), int(n[b]))
            for a in range(len(names)) for b in range(len(names))
            if a != b and n[a] >= min_count and P[a, b] >= min_p and lift[a, b] >= min_lift]
    df = pd.DataFrame(rows, columns=["tag", "implies", "p", "lift", "count_tag", "count_implied"])
    return df.sort_values(["p", "count_tag"], ascending=False, kind="stable").reset_index(drop=True)


def tags_per_image(Y: np.ndarray) -> pd.Series:
    """How many images carry 0, 1, 2, ... kept tags."""
    k = Y.sum(1).astype(int)
    return pd.Series(np.bincount(k), name="images").rename_axis("kept_tags")


def few_tag_share(Y: np.ndarray, at_most: Iterable[int] = (1, 2, 3)) -> dict[int, float]:
    k = Y.sum(1)
    return {int(m): float((k <= m).mean()) if len(k) else 0.0 for m in at_most}


def lift_matrix(Y: np.ndarray) -> np.ndarray:
    """Lift of each tag pair, P(a and b) / (P(a) P(b)): 1 where they are independent, above 1
    where they come together more than their frequencies explain. A tag on most images
    (`solo`) has lift near 1 with everything, unlike P(b|a), which it dominates. Diagonal: NaN."""
    Yf = np.asarray(Y, dtype=np.float64)
    n = max(len(Yf), 1)
    p = Yf.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = (Yf.T @ Yf / n) / np.outer(p, p)
    lift[~np.isfinite(lift)] = np.nan
    np.fill_diagonal(lift, np.nan)
    return lift


def confusions(y: np.ndarray, pred: np.ndarray, names: list[str], min_count: int = 5, top: int = 15) -> pd.DataFrame:
    """The tag pairs the model mixes up: among images tagged `tag` but not `predicted`, the
    share on which `predicted` was predicted, against its false-alarm rate elsewhere
    (`long_hair` read as `very_long_hair`, `1girl` as `1boy`)."""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    rows = []
    for a in range(y.shape[1]):
        for b in range(y.shape[1]):
            if a == b:
                continue
            only_a = y[:, a] & ~y[:, b]
            neither_b = ~y[:, b] & ~only_a
            if only_a.sum() < min_count or neither_b.sum() < min_count:
                continue
            rate = pred[only_a, b].mean()
            base = pred[neither_b, b].mean()
            rows.append((names[a], names[b], int(only_a.sum()), rate, base))
    df = pd.DataFrame(rows, columns=["tag", "predicted", "images", "rate", "rate_elsewhere"])
    df["excess"] = df["rate"] - df["rate_elsewhere"]
    return df.sort_values("excess", ascending=False, kind="stable").head(top).reset_index(drop=True)
