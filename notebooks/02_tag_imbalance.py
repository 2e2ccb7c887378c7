# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · How unbalanced are the tags?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/animetag/animetag/blob/main/notebooks/02_tag_imbalance.ipynb)
#
# Before spending GPU hours, look at the labels. This notebook works from the metadata
# alone (so you can look before downloading a single image) and, when it exists, from the
# built subset. It shows the long tail of tag frequencies, the imbalance of the kept tags,
# how few tags many images keep, and the tags that (nearly) imply one another: four of the
# thesis's five data problems, measured.
#
# **Needs:** a CPU runtime. Figures are also saved as PNG files.

# %%
# Set-up on Colab: Google Drive, then the package (Colab already has TensorFlow and Keras).
# SOURCE: a Git URL (add @tag or @commit), a folder on Drive holding the project, or an
# uploaded .zip or wheel (e.g. "/content/animetag.zip"). Nothing happens outside Colab.
SOURCE = "git+https://github.com/animetag/animetag"  # @param {type:"string"}
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    from google.colab import drive

    drive.mount("/content/drive")
    url = SOURCE if SOURCE.startswith("git+") else "file://" + os.path.abspath(SOURCE)
    spec = f"animetag[onnx] @ {url}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], capture_output=True, text=True)
    if pip.returncode:
        raise RuntimeError(f"pip could not install animetag from {SOURCE!r}:\n{pip.stderr[-3000:]}")

# %% tags=["parameters"]
# Form fields (Colab shows them as a form). An environment variable ANIMETAG_<NAME>
# overrides each one (the only settings read from the environment): that is how `make demo`
# and the tests run the notebook on the sample.
# WORKSPACE: where subsets, runs and figures live (empty: MyDrive/animetag on Colab, ./data
# elsewhere). METADATA: Danbooru metadata files, separated by ";" (empty: those notebook 01
# built the subset from, or the built-in sample). HEATMAP_TAGS: how many of the top tags the
# P(b|a) heatmap shows; IMPLICATION_P: P(b|a) at or above this counts as a near-implication.
PROFILE = "sample"  # @param ["sample", "full", "tiny"]
WORKSPACE = ""  # @param {type:"string"}
METADATA = ""  # @param {type:"string"}
TOP_K = 100  # @param {type:"integer"}
HEATMAP_TAGS = 30  # @param {type:"integer"}
IMPLICATION_P = 0.9  # @param {type:"number"}

from animetag import params_from_env

PROFILE, WORKSPACE, METADATA, TOP_K, HEATMAP_TAGS, IMPLICATION_P = params_from_env(
    PROFILE=PROFILE, WORKSPACE=WORKSPACE, METADATA=METADATA, TOP_K=TOP_K,
    HEATMAP_TAGS=HEATMAP_TAGS, IMPLICATION_P=IMPLICATION_P).values()

# %%
from animetag import workspace

ws = workspace(PROFILE, WORKSPACE, metadata=METADATA)

# %% [markdown]
# ## The long tail, from the metadata
# Danbooru's tag frequencies fall off as a power law. On real Danbooru the top-100
# general tags run from about 75% of posts (`1girl`) to about 6%, a log-log slope of
# about -0.6 over ranks 1-100 and about -1.0 over ranks 1-1000. Counted, as notebook 01
# counts them, over the posts whose image is here: with a mirror's archives (grouped by
# `id % 1000`) a random sample of Danbooru, read without loading all ~8M posts.

# %%
from animetag import plots, study_posts, tag_stats

posts, report, where = study_posts(ws)
print("counted over", where)
posts = posts[~posts["is_deleted"]]
counts = tag_stats.tag_counts(posts)
general = counts[counts["category"] == "general"]
print(f"{len(posts)} posts, {len(counts)} distinct tags, {len(report.malformed)} malformed records")
print(f"general tags: slope over ranks 1-100 {tag_stats.rank_frequency_slope(general['count'], 1, 100):.2f}, "
      f"over 1-1000 {tag_stats.rank_frequency_slope(general['count'], 1, 1000):.2f}")
print(f"top-{TOP_K} general tags run from {general['share'].iloc[0]:.1%} "
      f"down to {general['share'].iloc[min(TOP_K, len(general)) - 1]:.1%} of posts")
plots.save(plots.rank_frequency(counts, kept=TOP_K, n_posts=len(posts)), ws.figures, "02_rank_frequency")

# %%
plots.save(plots.top_by_category(counts, k=15, n_posts=len(posts)), ws.figures, "02_top_by_category")

# %% [markdown]
# ## The kept tags
# From the built subset when it exists, else from the metadata with the same top-K rule.

# %%
import numpy as np

from animetag import kept_tags, label_matrix, n_ratings, read_subset, subset_config, tag_rows, tag_vocabulary

if (ws.subset / "subset.json").exists():  # its tags, without the rating rows in front
    tags, manifest, _ = read_subset(ws.subset)
    R = n_ratings(tags)
    Y, names, source = label_matrix(manifest, tags)[:, R:], tags["name"].iloc[R:].tolist(), f"subset {ws.subset}"
else:
    cfg = subset_config(PROFILE, top_k=TOP_K)
    vocab_df = tag_rows(tag_vocabulary(posts, cfg))
    names = vocab_df["name"].tolist()
    idx = kept_tags(posts, cfg.categories, {t: i for i, t in enumerate(names)})
    Y = np.zeros((len(idx), len(names)), dtype=np.uint8)
    for i, row in enumerate(idx):
        Y[i, row] = 1
    Y, source = Y[Y.sum(1) > 0], "metadata"
print(f"{len(names)} kept tags over {len(Y)} images, from the {source}")

# %%
from animetag import plots, tag_stats

rates = tag_stats.positive_rates(Y, names)
print(f"imbalance ratio (negatives per positive): median {rates['imbalance_ratio'].median():.1f}, "
      f"worst {rates['imbalance_ratio'].max():.1f} ({rates.loc[rates['imbalance_ratio'].idxmax(), 'name']})")
plots.save(plots.positive_rates(rates), ws.figures, "02_positive_rates")
rates.sort_values("rate").head(10)

# %% [markdown]
# ## Tags per image
# Many images keep only a few of the top tags, so most of their labels are negatives.

# %%
from animetag import plots, tag_stats

print({f"<= {k} kept tags": f"{v:.1%}" for k, v in tag_stats.few_tag_share(Y).items()})
plots.save(plots.tags_per_image(tag_stats.tags_per_image(Y)), ws.figures, "02_tags_per_image")

# %% [markdown]
# ## Co-occurrence and the pseudo-hierarchy
# P(b | a): how often tag b is present when tag a is (diagonal masked). Rows that are
# nearly 1 in some column are near-implications (`very_long_hair` -> `long_hair`, a
# character -> its hair colour): a model is asked to learn the same thing twice, and a post
# tagged with only one of the pair teaches it the wrong thing. The table leaves out tags
# that follow everything (`solo`: lift near 1).

# %%
from animetag import plots, tag_stats

plots.save(plots.conditional_heatmap(tag_stats.conditional_matrix(Y), names, top=HEATMAP_TAGS), ws.figures, "02_cooccurrence")
tag_stats.near_implications(Y, names, min_p=IMPLICATION_P).head(20).round(3)

# %% [markdown]
# P(b | a) is dominated by the commonest tags: `solo` is on most images, so every row
# "implies" it. Lift, P(a and b) / (P(a) P(b)), divides that out: 1 for independent tags,
# above 1 for pairs that come together more than their frequencies explain. Every kept tag,
# diagonal masked, on a log scale; and the pairs with the highest lift.

# %%
import pandas as pd

from animetag import plots, tag_stats

lift = tag_stats.lift_matrix(Y)
plots.save(plots.lift_heatmap(lift, names), ws.figures, "02_lift")
pos = Y.sum(0)
pairs = [(names[a], names[b], lift[a, b], int(pos[a]), int(pos[b])) for a in range(len(names))
         for b in range(a + 1, len(names)) if min(pos[a], pos[b]) >= 5 and np.isfinite(lift[a, b])]
pd.DataFrame(pairs, columns=["tag a", "tag b", "lift", "count a", "count b"]).nlargest(15, "lift").round(2)

# %%
print("figures saved in", ws.figures)
