"""The output vocabulary: one row of `tags.csv` per model output, in the WD taggers' order.

Rows, as in their `selected_tags.csv`: the four ratings first (category 9: `general`,
`sensitive`, `questionable`, `explicit`), then general tags (0), then characters (4), then
any other category a subset keeps. A subset built from metadata without ratings (or with
rating outputs turned off), and every subset built before ratings existed, simply has no
category-9 rows; everything below works on both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from animetag.config import CATEGORY_NAMES, RATING_CATEGORY, RATING_NAMES

# Category ids in the order their rows appear.
WD_ORDER = (RATING_CATEGORY, 0, 4, 3, 1, 5)


def category_name(category: int) -> str:
    """`general`, `character`, ..., `rating` for a category id."""
    c = int(category)
    return "rating" if c == RATING_CATEGORY else CATEGORY_NAMES.get(c, str(c))


def n_ratings(tags: pd.DataFrame) -> int:
    """How many rating rows the vocabulary starts with (4, or 0 without a rating head)."""
    cats = tags["category"].astype(int).to_numpy()
    n = int((cats == RATING_CATEGORY).sum())
    if n and not (cats[:n] == RATING_CATEGORY).all():
        raise ValueError("tags.csv: the rating rows (category 9) must come first, as in the WD taggers' files")
    if n not in (0, len(RATING_NAMES)):
        raise ValueError(f"tags.csv: {n} rating rows; expected {len(RATING_NAMES)} ({', '.join(RATING_NAMES.values())})")
    return n


def tag_rows(tags: pd.DataFrame) -> pd.DataFrame:
    """The tag rows (everything after the ratings), indexed from 0."""
    return tags.iloc[n_ratings(tags):].reset_index(drop=True)


def split_outputs(a: np.ndarray, n_rat: int) -> tuple[np.ndarray, np.ndarray]:
    """(rating columns, tag columns) of labels or scores laid out as the output rows."""
    a = np.asarray(a)
    return a[..., :n_rat], a[..., n_rat:]


def rating_rows(counts: dict[str, int]) -> pd.DataFrame:
    """The four rating rows with their post counts (tag_id 9999999, as WD marks them: no
    Danbooru tag)."""
    return pd.DataFrame({"tag_id": 9999999,
                         "name": list(RATING_NAMES.values()), "category": RATING_CATEGORY,
                         "count": [int(counts.get(r, 0)) for r in RATING_NAMES]})


def rating_index(letter: str) -> int | None:
    """Row index of a rating letter among the rating rows; None for an unknown rating."""
    keys = list(RATING_NAMES)
    return keys.index(letter) if letter in keys else None


def wd_sorted(tags: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by category as the WD taggers order them, by count (then name) within one."""
    rank = {c: i for i, c in enumerate(WD_ORDER)}
    key = tags["category"].astype(int).map(lambda c: rank.get(c, len(rank)))
    out = tags.assign(_rank=key).sort_values(["_rank", "count", "name"], ascending=[True, False, True],
                                              kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)


def rating_labels(Y: np.ndarray, n: int) -> np.ndarray:
    """Per image the index of its rating, -1 where the post has none (columns :n of Y)."""
    if n == 0:
        return np.full(len(Y), -1)
    r = np.asarray(Y)[:, :n]
    return np.where(r.sum(1) > 0, r.argmax(1), -1)
