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
# built-in Danbooru-shaped sample. For the thesis subset, pick a Danbooru mirror in
# `MIRROR` (the recommended one is gated: accept its terms on its Hugging Face page and add
# a Colab secret `HF_TOKEN`), or point `METADATA` and `IMAGES` at Danbooru metadata and
# images you already have (on Google Drive, say). Naming either switches `PROFILE` to
# `full`. Only the posts whose image was downloaded are drawn from; if they are too few for
# `MAX_IMAGES`, the build says how many more archives would close the gap.

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
    spec = f"animetag[onnx,hub] @ {url}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], capture_output=True, text=True)
    if pip.returncode:
        raise RuntimeError(f"pip could not install animetag from {SOURCE!r}:\n{pip.stderr[-3000:]}")

from animetag import check_versions

print(check_versions())

# %% tags=["parameters"]
# Form fields (Colab shows them as a form). An environment variable ANIMETAG_<NAME>
# overrides each one (the only settings read from the environment): that is how `make demo`
# and the tests run the notebook on the sample.
# PROFILE: "full" is the thesis setting (chosen for you when a mirror or metadata is named).
# WORKSPACE: where subsets, runs and figures go (empty: MyDrive/animetag on Colab, ./data
# elsewhere). METADATA: Danbooru metadata files, separated by ";" (JSON lines, JSON, CSV or
# Parquet), and IMAGES: their image folder or .tar archives (empty: the built-in sample), e.g.
# "/content/drive/MyDrive/danbooru/posts.json" and "/content/drive/MyDrive/danbooru".
# TOP_K general tags (the thesis: 100); TOP_K_CHARACTER characters after them, as the WD
# taggers order their outputs (-1: the profile's, sample 10, full 0); IMAGE_SIZE 0: the
# profile's (sample 64, full 256); REBUILD: build again even if the subset exists.
PROFILE = "sample"  # @param ["sample", "full", "tiny"]
WORKSPACE = ""  # @param {type:"string"}
METADATA = ""  # @param {type:"string"}
IMAGES = ""  # @param {type:"string"}
TOP_K = 100  # @param {type:"integer"}
TOP_K_CHARACTER = -1  # @param {type:"integer"}
MAX_IMAGES = 25000  # @param {type:"integer"}
IMAGE_SIZE = 0  # @param {type:"integer"}
REBUILD = False  # @param {type:"boolean"}
# A public Danbooru mirror on the Hugging Face Hub instead of METADATA and IMAGES: its
# metadata and its first HF_ARCHIVES image archives (of 1,000, grouped by post id % 1000) are
# downloaded into the workspace and read in place; raise HF_ARCHIVES later and only the new
# archives are fetched. The thesis's 25,000 images need about 4 archives of the recommended
# mirror (about 1.7 GB each). "custom": the repository HF_DATASET, its archives HF_TARS and
# metadata HF_METADATA (patterns matched per folder: "images/*.tar"), the metadata from
# HF_METADATA_REPO when it lives elsewhere. A gated mirror needs a token: a Colab secret named
# HF_TOKEN (or the environment variable).
MIRROR = "none"  # @param ["none", "deepghs/danbooru2024-webp-4Mpixel", "deepghs/danbooru2024-webp-4Mpixel + isek-ai/danbooru-tags-2024", "nyanko7/danbooru2023", "custom"]
HF_ARCHIVES = 4  # @param {type:"integer"}
HF_DATASET = ""  # @param {type:"string"}
HF_TARS = "*.tar"  # @param {type:"string"}
HF_METADATA = "*.parquet"  # @param {type:"string"}
HF_METADATA_REPO = ""  # @param {type:"string"}

from animetag import params_from_env, profile_for_source

(PROFILE, WORKSPACE, METADATA, IMAGES, TOP_K, TOP_K_CHARACTER, MAX_IMAGES, IMAGE_SIZE,
 REBUILD, MIRROR, HF_ARCHIVES, HF_DATASET, HF_TARS, HF_METADATA, HF_METADATA_REPO) = params_from_env(
    PROFILE=PROFILE, WORKSPACE=WORKSPACE, METADATA=METADATA, IMAGES=IMAGES, TOP_K=TOP_K,
    TOP_K_CHARACTER=TOP_K_CHARACTER, MAX_IMAGES=MAX_IMAGES, IMAGE_SIZE=IMAGE_SIZE,
    REBUILD=REBUILD, MIRROR=MIRROR, HF_ARCHIVES=HF_ARCHIVES, HF_DATASET=HF_DATASET, HF_TARS=HF_TARS,
    HF_METADATA=HF_METADATA, HF_METADATA_REPO=HF_METADATA_REPO).values()
if HF_DATASET and MIRROR == "none":
    MIRROR = "custom"
PROFILE, note = profile_for_source(PROFILE, METADATA, MIRROR)
if note:
    print(note)

# %% [markdown]
# ## A Danbooru mirror from the Hugging Face Hub
# Skipped when `MIRROR` is `none`. First the plan: the files, their size on the Hub, the
# posts they should hold and the free space; a download that will not fit is refused. Each
# file is downloaded to the local disk, then moved into the workspace and renamed when
# whole, so an interrupted download leaves no half file on Drive.

# %%
if MIRROR != "none":
    from animetag import data_home, mirror

    preset = mirror.resolve_preset(MIRROR, HF_DATASET, HF_TARS, HF_METADATA, HF_METADATA_REPO)
    token = mirror.hub_token()
    mirror_dir = data_home(WORKSPACE) / "mirrors" / preset.repo.replace("/", "__")
    plan = mirror.plan_fetch(preset, mirror_dir, HF_ARCHIVES, token=token, name=MIRROR)
    print(plan.describe())
    needed = preset.archives_for(MAX_IMAGES)
    if needed > HF_ARCHIVES:
        print(f"note: MAX_IMAGES={MAX_IMAGES:,} needs about {needed} archives of this mirror; "
              f"HF_ARCHIVES={HF_ARCHIVES} will give fewer images")
    meta, tars = mirror.fetch(plan, token=token)
    METADATA, IMAGES = ";".join(map(str, meta)), str(mirror_dir)

# %%
from animetag import ensure_metadata, ensure_subset, workspace

ws = workspace(PROFILE, WORKSPACE, metadata=METADATA, images=IMAGES)
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

from animetag import read_subset

tags, manifest, summary = read_subset(ws.subset)
counts = summary["counts"]
for w in summary.get("warnings", []):
    if PROFILE == "full" or not summary.get("shortfall") or w != summary["shortfall"]["message"]:
        print("note:", w)  # (the sample holds fewer images than MAX_IMAGES by design)
pd.Series({k: v for k, v in counts.items() if not isinstance(v, dict)}, name="posts").to_frame()

# %% [markdown]
# ## What was left out, and why
# Every record that did not make it into the subset is counted by its reason in
# `subset.json`: malformed metadata lines, posts without an image here (`missing_file`: with
# a few mirror archives, nearly all of Danbooru), deleted posts, duplicate md5s, posts with
# none of the kept tags, corrupt images, images over the pixel limit. The first 1,000 of
# each reason are listed with their id (or file and line) and detail. The tag counts, and so
# the top-K tags, are over the posts with an image here that pass the filters.

# %%
from IPython.display import display

display(pd.Series(counts["left_out"], name="records").to_frame())
print("vocabulary counted over:", summary["vocabulary"]["posts"], "posts,", summary["vocabulary"]["note"])
left = pd.DataFrame(summary["left_out"])
if "id" in left:  # malformed records have no id, only their file and line
    left["id"] = left["id"].astype("Int64").astype(str).replace("<NA>", "")
left.groupby("reason").head(2).fillna("")

# %% [markdown]
# ## The outputs: ratings, general tags, characters
# `tags.csv` is in the order of the WD taggers' `selected_tags.csv`, one row per model
# output: the four ratings first (category 9), then the general tags, then the characters.
# Ratings come from the metadata; before 2022 Danbooru rated *s(afe)/q/e*, and such
# metadata is recognised and its `s` kept as `general`. A post without a rating is kept;
# its rating just does not count in training.

# %%
from animetag import category_name

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
from animetag import peek, plots

from animetag import n_ratings

ids, images, labels = peek(ws.subset, "train", 8)
names, R = tags["name"].tolist(), n_ratings(tags)
captions = []
for i, y in zip(ids, labels):
    rating = [names[j] for j in y[:R].nonzero()[0]]
    captions.append(f"post {i}" + (f" (rating: {rating[0]})" if rating else "") + "\n"
                    + ", ".join(names[R + j] for j in y[R:].nonzero()[0][:8]))
plots.save(plots.image_grid(list(images), captions, cols=4, title="training images and their tags"), ws.figures, "01_samples")
