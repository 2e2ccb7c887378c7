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
# # 01 · Build the dataset subset
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/animetag/animetag/blob/main/notebooks/01_subset_dataset.ipynb)
#
# This notebook turns Danbooru metadata and images into a training subset, the way the
# thesis did: the top-100 **general** tags (so meta tags such as `highres` never become
# labels), 25k images chosen at random among the posts that carry at least one of them,
# and a train/validation/test split that is stratified over all 100 tags at once. Images
# are decoded, padded to a white square and resized **once**, here, into TFRecord shards,
# so training never decodes a full-size image.
#
# **Needs:** a CPU runtime is enough (no GPU). With the `sample` profile it runs on the
# built-in Danbooru-shaped sample; with `full`, point `ANIMETAG_METADATA` and
# `ANIMETAG_IMAGES` at your Danbooru metadata and images (on Google Drive, say).

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

from animetag.colab import check_versions

print(check_versions())

# %% tags=["parameters"]
# Form fields (Colab shows them as a form). An environment variable ANIMETAG_<NAME>
# overrides each one: that is how `make demo` and the tests run the notebook on the sample.
# PROFILE: "full" is the thesis setting. WORKSPACE: where subsets, runs and figures go
# (empty: MyDrive/animetag on Colab, ./data elsewhere). METADATA: Danbooru metadata files,
# space separated, and IMAGES: their image folder or .tar archives (empty: the built-in
# sample), e.g. "/content/drive/MyDrive/danbooru/posts.json" and "/content/drive/MyDrive/danbooru".
# TOP_K general tags (the thesis: 100); TOP_K_CHARACTER characters after them, as the WD
# taggers order their outputs (-1: the profile's, sample 10, full 0); IMAGE_SIZE 0: the
# profile's (sample 64, full 256); REBUILD: build again even if the subset exists.
import os

PROFILE = "sample"  # @param ["sample", "full"]
WORKSPACE = ""  # @param {type:"string"}
METADATA = ""  # @param {type:"string"}
IMAGES = ""  # @param {type:"string"}
TOP_K = 100  # @param {type:"integer"}
TOP_K_CHARACTER = -1  # @param {type:"integer"}
MAX_IMAGES = 25000  # @param {type:"integer"}
IMAGE_SIZE = 0  # @param {type:"integer"}
REBUILD = False  # @param {type:"boolean"}
# On Colab, a public Danbooru mirror on the Hugging Face Hub instead (e.g. HF_DATASET
# "owner/name"): its metadata files matching HF_METADATA and its first HF_ARCHIVES image
# archives matching HF_TARS are downloaded to the workspace and read in place.
HF_DATASET = ""  # @param {type:"string"}
HF_ARCHIVES = 2  # @param {type:"integer"}
HF_TARS = "*.tar"  # @param {type:"string"}
HF_METADATA = "*.parquet"  # @param {type:"string"}

from animetag.workspace import params_from_env

globals().update(params_from_env(
    PROFILE=PROFILE, WORKSPACE=WORKSPACE, METADATA=METADATA, IMAGES=IMAGES, TOP_K=TOP_K,
    TOP_K_CHARACTER=TOP_K_CHARACTER, MAX_IMAGES=MAX_IMAGES, IMAGE_SIZE=IMAGE_SIZE,
    REBUILD=REBUILD, HF_DATASET=HF_DATASET, HF_ARCHIVES=HF_ARCHIVES, HF_TARS=HF_TARS,
    HF_METADATA=HF_METADATA))
if WORKSPACE:
    os.environ["ANIMETAG_HOME"] = WORKSPACE

# %%
import sys

if HF_DATASET and "google.colab" in sys.modules:  # the Hub download, on Colab only
    from pathlib import Path

    from animetag.config import data_home
    from animetag.mirror import fetch_mirror

    mirror = data_home() / "mirrors" / HF_DATASET.replace("/", "__")
    meta, tars = fetch_mirror(HF_DATASET, mirror, HF_ARCHIVES, archives=HF_TARS, metadata=HF_METADATA)
    METADATA, IMAGES = " ".join(map(str, meta)), str(mirror)
    print(f"{len(meta)} metadata files and {len(tars)} image archives in {mirror}")

# %%
from animetag.workspace import ensure_metadata, ensure_subset, workspace

os.environ.setdefault("ANIMETAG_PROFILE", PROFILE)
if METADATA:
    os.environ["ANIMETAG_METADATA"], os.environ["ANIMETAG_IMAGES"] = METADATA, IMAGES
ws = workspace(PROFILE)
print("metadata:", [str(p) for p in ensure_metadata(ws)])
print("images:  ", ws.images_root)
print("subset:  ", ws.subset)

# %% [markdown]
# ## Build
# The build streams the metadata (a Danbooru2021 file is about 800 MB), picks the top-K
# tags, selects images at random, decodes them in parallel processes and writes the
# shards. It works in `<subset>.partial/` and renames it only when complete; run the cell
# again after an interruption and it resumes from the images already decoded.

# %%
import shutil

if REBUILD and ws.subset.exists():
    shutil.rmtree(ws.subset)
subset = ensure_subset(ws, top_k=TOP_K, top_k_character=TOP_K_CHARACTER if TOP_K_CHARACTER >= 0 else None,
                       max_images=MAX_IMAGES, image_size=IMAGE_SIZE or None)
print("subset built:", subset)

# %%
import pandas as pd

from animetag.subset import read_subset

tags, manifest, summary = read_subset(ws.subset)
counts = summary["counts"]
pd.Series({k: v for k, v in counts.items() if not isinstance(v, dict)}, name="images").to_frame()

# %% [markdown]
# ## What was left out, and why
# Every record that did not make it into the subset is listed in `subset.json` with its
# reason: malformed metadata lines, deleted posts, duplicate md5s, posts with none of the
# kept tags, missing or corrupt image files, images over the pixel limit.

# %%
from IPython.display import display

left = pd.DataFrame(summary["left_out"])
if "id" in left:  # malformed records have no id, only their file and line
    left["id"] = left["id"].astype("Int64").astype(str).replace("<NA>", "")
display(left["reason"].value_counts().rename("records").to_frame())
left.groupby("reason").head(2).fillna("")

# %% [markdown]
# ## The outputs: ratings, general tags, characters
# `tags.csv` is in the order of the WD taggers' `selected_tags.csv`, one row per model
# output: the four ratings first (category 9), then the general tags, then the characters.
# Ratings come from the metadata; before 2022 Danbooru rated *s(afe)/q/e*, and such
# metadata is recognised and its `s` kept as `general`. A post without a rating is kept;
# its rating just does not count in training.

# %%
from animetag.vocab import category_name

print(pd.Series([category_name(c) for c in tags["category"]]).value_counts().rename("rows").to_dict())
r = summary["ratings"]
print(f"ratings read as '{r['scheme']}' ({r['note']}); kept images per rating: {r['kept']}")

# %% [markdown]
# ## The vocabulary and the split
# The split is multi-label iterative stratification: each tag's positives are spread
# over train/val/test in about the 80/10/10 proportion, even for rare tags.

# %%
pos = pd.DataFrame({s: summary["positives_per_split"][s] for s in ("train", "val", "test")},
                   index=summary["positives_per_split"]["tags"])
pos["val_share"] = pos["val"] / pos.sum(axis=1)
pos["test_share"] = pos["test"] / pos[["train", "val", "test"]].sum(axis=1)
print(f"{len(tags)} tags; tags with no validation positive: {(pos['val'] == 0).sum()}, "
      f"no test positive: {(pos['test'] == 0).sum()}")
shown = tags.merge(pos, left_on="name", right_index=True).assign(category=tags["category"].map(category_name))
shown.round({"val_share": 3, "test_share": 3}).head(15)

# %% [markdown]
# ## What the model will see
# Images from the training shards, already padded and resized, with their kept tags.

# %%
from animetag.plots import image_grid, save
from animetag.shards import peek

from animetag.vocab import n_ratings

ids, images, labels = peek(ws.subset, "train", 8)
names, R = tags["name"].tolist(), n_ratings(tags)
captions = []
for i, y in zip(ids, labels):
    rating = [names[j] for j in y[:R].nonzero()[0]]
    captions.append(f"post {i}" + (f" (rating: {rating[0]})" if rating else "") + "\n"
                    + ", ".join(names[R + j] for j in y[R:].nonzero()[0][:8]))
save(image_grid(list(images), captions, cols=4, title="training images and their tags"), ws.figures, "01_samples")
