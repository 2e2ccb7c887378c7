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
# # 05 · Tag your images
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/animetag/animetag/blob/main/notebooks/05_tag_images.ipynb)
#
# Use the trained tagger: score a few images and look at their top tags, write one caption
# file per image for a whole folder (comma separated, highest score first, as image-
# generator fine-tuning scripts expect), and export the model as ONNX with a
# `selected_tags.csv`, the files the WD-tagger tools (kohya's scripts, the WebUI and
# ComfyUI extensions) read.
#
# **Needs:** a run folder with `model.keras` (notebook 03) and, for tuned thresholds,
# `thresholds.json` (notebook 04). A CPU is enough.

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
    spec = f"animetag[onnx,app] @ {url}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], capture_output=True, text=True)
    if pip.returncode:
        raise RuntimeError(f"pip could not install animetag from {SOURCE!r}:\n{pip.stderr[-3000:]}")

# %% tags=["parameters"]
# Form fields (Colab shows them as a form). An environment variable ANIMETAG_<NAME>
# overrides each one (the only settings read from the environment): that is how `make demo`
# and the tests run the notebook on the sample.
# WORKSPACE: where runs live (empty: MyDrive/animetag on Colab, ./data elsewhere); RUN:
# another run folder (empty: the workspace's).
# TAG_IMAGES: a folder of your images (empty: a few sample images); UPLOAD: on Colab, a file
# picker instead. MAX_TAGS: a cap per caption. THRESHOLD: one global threshold (0: the tuned
# thresholds from notebook 04 when present, else 0.5). UNDERSCORES_TO_SPACES: "long hair"
# rather than "long_hair"; RATING_IN_CAPTIONS: start each caption with the rating.
# OPEN_APP: the tagger as a page below the last cell (auto: on Colab only); SHARE_LINK: a
# public gradio.live link as well (off: the page stays inside this notebook).
PROFILE = "sample"  # @param ["sample", "full", "tiny"]
WORKSPACE = ""  # @param {type:"string"}
RUN = ""  # @param {type:"string"}
TAG_IMAGES = ""  # @param {type:"string"}
UPLOAD = False  # @param {type:"boolean"}
MAX_TAGS = 25  # @param {type:"integer"}
THRESHOLD = 0.0  # @param {type:"number"}
UNDERSCORES_TO_SPACES = True  # @param {type:"boolean"}
RATING_IN_CAPTIONS = False  # @param {type:"boolean"}
EXPORT_FORMAT = "onnx"  # @param ["onnx", "savedmodel"]
OPEN_APP = "auto"  # @param ["auto", "yes", "no"]
SHARE_LINK = False  # @param {type:"boolean"}

from animetag import params_from_env

(PROFILE, WORKSPACE, RUN, TAG_IMAGES, UPLOAD, MAX_TAGS, THRESHOLD, UNDERSCORES_TO_SPACES,
 RATING_IN_CAPTIONS, EXPORT_FORMAT, OPEN_APP, SHARE_LINK) = params_from_env(
    PROFILE=PROFILE, WORKSPACE=WORKSPACE, RUN=RUN, TAG_IMAGES=TAG_IMAGES, UPLOAD=UPLOAD,
    MAX_TAGS=MAX_TAGS, THRESHOLD=THRESHOLD, UNDERSCORES_TO_SPACES=UNDERSCORES_TO_SPACES,
    RATING_IN_CAPTIONS=RATING_IN_CAPTIONS, EXPORT_FORMAT=EXPORT_FORMAT, OPEN_APP=OPEN_APP,
    SHARE_LINK=SHARE_LINK).values()
THRESHOLD = THRESHOLD or None

# %%
from pathlib import Path

from animetag import ensure_run, workspace

ws = workspace(PROFILE, WORKSPACE, run=RUN)
run = ensure_run(ws)
folder = Path(TAG_IMAGES) if TAG_IMAGES else ws.home / "to_tag"
if UPLOAD and "google.colab" in sys.modules:
    from google.colab import files  # only on Colab

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.upload().items():
        (folder / name).write_bytes(data)
elif not TAG_IMAGES:  # a few sample images, one of them broken on purpose
    import shutil

    from animetag import ensure_sample, find_images

    sample = ensure_sample(ws)
    folder.mkdir(parents=True, exist_ok=True)
    for f in find_images([sample / "512px"])[:12]:
        shutil.copy(f, folder / f.name)
    (folder / "not_an_image.jpg").write_bytes(b"this file is not an image")
print("run:   ", run)
print("images:", folder)

# %% [markdown]
# ## Scores for a few images
# The same preprocessing as training, and the WD taggers' own: the whole image decoded,
# first frame, RGB (transparency onto white), padded to a white square, one bicubic resize.
# Beside the top tags, each title gives the image's rating (the highest of the four rating
# scores) when the model has a rating head.

# %%
import matplotlib.pyplot as plt
import numpy as np

from animetag import ImageError, TagChoice, Tagger, find_images, load_array, plots

tagger = Tagger(run)
choice = TagChoice(threshold=THRESHOLD, max_tags=MAX_TAGS, underscores_to_spaces=UNDERSCORES_TO_SPACES,
                   rating=RATING_IN_CAPTIONS)
print("thresholds:", "tuned (thresholds.json)" if tagger.thresholds and THRESHOLD is None else THRESHOLD or 0.5)
shown = []
for f in find_images([folder]):
    try:
        shown.append((f, load_array(f, 256)))
    except ImageError as e:
        print(f"skipped {f.name}: {e.reason}")
    if len(shown) == 4:
        break
scores = tagger.predict([f for f, _ in shown])  # every output: the ratings first, then the tags
ratings = tagger.rating(scores)
fig, axes = plt.subplots(len(shown), 2, figsize=(10, 3 * len(shown)), gridspec_kw={"width_ratios": [1, 1.6]})
for (f, img), row, (rating, r_score), (ax_img, ax_bar) in zip(
        shown, scores[:, tagger.n_ratings:], ratings, np.atleast_2d(axes)):
    ax_img.imshow(img)
    ax_img.set_title(f"{f.name}" + (f"\nrating: {rating} ({r_score:.2f})" if rating else ""), fontsize=8)
    ax_img.axis("off")
    top = np.argsort(-row)[:10][::-1]
    ax_bar.barh([tagger.names[j] for j in top], row[top])
    ax_bar.set_xlim(0, 1)
    ax_bar.tick_params(axis="y", labelsize=8)
fig.tight_layout()
plots.save(fig, ws.figures, "05_top_tags")

# %% [markdown]
# ## Captions for the whole folder
# One `.txt` beside each image. Existing captions are kept unless `overwrite=True`;
# unreadable files are reported and skipped.

# %%
from animetag import tag_paths

report = tag_paths(tagger, [folder], fmt="txt", choice=choice, overwrite=True)
print(report.summary())
for e in report.errors:
    print("  ", e["file"], e["reason"])
print(Path(report.outputs[0]).name, "->", Path(report.outputs[0]).read_text())

# %% [markdown]
# ## Export for the tagger ecosystem
# Laid out as the WD taggers are, so their clients (dghs-imgutils, the WebUI and ComfyUI
# WD14 taggers, kohya's scripts) read it unchanged: ONNX with a dynamic batch and two
# outputs (the scores, then the pooled embedding), **BGR** input like theirs,
# `selected_tags.csv` with the rating rows first, then general tags, then characters, and
# the tuned thresholds both as an extra `threshold` column and in the model's metadata.
# The README states the preprocessing exactly. Exporting needs Keras on TensorFlow: under
# JAX (a TPU runtime) this cell says so, and the run folder exports unchanged on a CPU or
# GPU runtime.

# %%
import pandas as pd
from IPython.display import display

from animetag import export_run, export_unavailable

if why := export_unavailable():
    print(why)
else:
    info = export_run(run, ws.home / "export" / PROFILE, EXPORT_FORMAT, overwrite=True)
    print(info)
    print(f"size on disk: {info['size_mb']} MB (thesis model: 200 MB; Camie Tagger v1: 850 MB)")
    print((Path(info["out"]) / "README.md").read_text())
    display(pd.read_csv(Path(info["out"]) / "selected_tags.csv").head(8))

# %% [markdown]
# ## The tagger as a page
# `animetag app` in the notebook: drop or paste an image, see its tags by category with their
# scores, move a category's threshold or pick a policy, copy the caption; a second tab tags a
# folder under the workspace. It runs the code `animetag tag` runs, so its captions are the
# ones written above for the same settings. The model is loaded once; one request at a time
# uses it. No public link unless SHARE_LINK is ticked. Outside a notebook:
# `animetag app --run RUN [--compare OTHER_RUN_OR_TAGGER] [--root FOLDER]`.

# %%
from animetag import in_colab

if OPEN_APP == "yes" or (OPEN_APP == "auto" and in_colab()):
    from animetag import serve_app

    page = serve_app(run, root=ws.home, share=SHARE_LINK, inline=True, block=False)
    print(f"the page: {page.local_url} (stop it with page.close())")
else:
    print("the page is not opened here (OPEN_APP); on Colab it opens below this cell")
