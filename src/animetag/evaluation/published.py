"""Published figures, each with what it measured, so comparisons can say whether they are
like for like."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Reference:
    model: str
    f1_micro: float | None
    f1_macro: float | None
    data: str  # which images
    n_test_images: int | None
    n_tags: int | None  # size of the label vocabulary the model predicts
    categories: str  # which tag categories the figures cover
    threshold: str  # threshold policy: "0.5", "global", "P=R", "balanced", ...
    params: int | None
    size_mb: float | None
    source: str


THESIS = Reference(
    "thesis ResNet-SE, focal loss", 0.3778, 0.1865, "Danbooru, 25k-image subset", None, 100,
    "general (top-100)", "0.5", 17_000_000, 200.0, "the diploma thesis this project reproduces")
CAMIE_V1_GENERAL = Reference(
    "Camie Tagger v1 (general, balanced)", 0.576, 0.204, "Danbooru", 20_116, 70_527,
    "general only", "balanced (0.258)", 214_000_000, 850.0,
    "Camie Tagger v1 model card, per-category table (the thesis's comparison)")
CAMIE_V1_ALL = Reference(
    "Camie Tagger v1 (all categories)", 0.611, 0.290, "Danbooru", 20_116, 70_527,
    "all", "micro-optimal (0.326)", 214_000_000, 850.0, "Camie Tagger v1 model card")
CAMIE_V2 = Reference(
    "Camie Tagger v2", 0.673, 0.506, "Danbooru", None, None, "all", "model card's", None, None,
    "Camie Tagger v2 model card")
WD_EVA02_V3 = Reference(
    "WD eva02-large tagger v3", None, 0.4772, "Danbooru", None, None, "general + character",
    "P=R", None, None, "SmilingWolf wd-eva02-large-tagger-v3 model card")
REFERENCES = (THESIS, CAMIE_V1_GENERAL, CAMIE_V1_ALL, CAMIE_V2, WD_EVA02_V3)

LOSS_SWEEP = ("SmilingWolf's sweep on Danbooru2021: summed BCE F1 0.6701, focal loss "
              "(alpha 0.25, gamma 2) F1 0.6618: plain BCE slightly ahead.")


# Threshold policies as the comparison groups them: a row's threshold text starts with one of these.
POLICY_KINDS = {"0.5": "0.5", "p=r": "P=R", "global": "tuned global", "balanced": "tuned global",
                "micro-optimal": "tuned global", "model card": "tuned global", "per tag": "per tag"}


def _policy_kind(threshold: str) -> str:
    """The policy a threshold text names; an unknown one is an error, never a guess (a
    like-for-like verdict on a guess would be wrong without a word)."""
    t = threshold.lower().replace("'s", "")
    for prefix, kind in POLICY_KINDS.items():
        if t.startswith(prefix):
            return kind
    raise ValueError(f"threshold policy {threshold!r}: not one of {sorted(set(POLICY_KINDS.values()))} "
                     f"(texts starting {sorted(POLICY_KINDS)})")


def _row_kind(row: dict) -> str:
    """A run row's policy group: its policy's own `kind`, else read from its threshold text."""
    return row.get("policy_kind") or _policy_kind(str(row.get("threshold", "")))


def _category_set(text: str) -> frozenset[str]:
    """The tag categories a row's `categories` text names ("general (top-100)" -> general)."""
    words = {w.strip("(),+") for w in str(text).lower().replace("+", " ").split()}
    return frozenset(words & {"general", "character", "copyright", "artist", "meta", "all"})


def like_for_like(ref: Reference, run: dict) -> tuple[bool, str]:
    """Whether this run's row can be set beside `ref`, and if not, every reason why not."""
    why = []
    if not str(run.get("data", "")).startswith("Danbooru"):
        why.append(f"different images ({run.get('data')} vs {ref.data})")
    if ref.n_tags is not None and run.get("n_tags") != ref.n_tags:
        why.append(f"{run.get('n_tags')} tags vs {ref.n_tags:,}")
    if _category_set(ref.categories) != _category_set(run.get("categories", "")):
        why.append(f"categories {run.get('categories')} vs {ref.categories}")
    if _policy_kind(ref.threshold) != _row_kind(run):
        why.append(f"threshold {run.get('threshold')} vs {ref.threshold}")
    return (not why), "; ".join(why) or "same data, tags and threshold policy"


def comparison_rows(run_rows: list[dict]) -> list[dict]:
    """Reference rows and this run's rows; each reference row says which run row it matches
    (same threshold policy) and whether that comparison is like for like, and why not."""
    rows = []
    for ref in REFERENCES:
        d = asdict(ref)
        same_policy = [r for r in run_rows if _row_kind(r) == _policy_kind(ref.threshold)]
        # the row measured like the reference, else one over the same categories (e.g. general
        # tags only), else the first of its policy
        match = min(same_policy, default=None, key=lambda r: (
            not like_for_like(ref, r)[0], _category_set(r["categories"]) != _category_set(ref.categories)))
        if match is not None:
            ok, why = like_for_like(ref, match)
            d.update({"compare_with": match["model"], "like_for_like": ok, "why": why})
        else:
            d.update({"compare_with": None, "like_for_like": False, "why": "no row of this run uses its policy"})
        rows.append(d)
    return rows + [dict(r, source="this run") for r in run_rows]


# Dense float16/bfloat16 tensor throughput of accelerators, TFLOP/s, from the vendors'
# datasheets: the peaks that model FLOP utilisation is measured against
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0, "V100": 125.0}
