# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
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
# # 07 · Teach it your tags
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/animetag/animetag/blob/main/notebooks/07_teach_your_tags.ipynb)
#
# The request heard most in the trackers of the taggers people use: *add my own tags (or
# characters) to a trained tagger*. animetag does it in two commands, and this notebook
# measures what it costs on the same test images:
#
# 1. a **parent** run is trained without the characters;
# 2. it is **fine-tuned** with them added (`animetag train --init-from PARENT`): the tags
#    both know keep their outputs, the new ones start at their prior, the backbone is frozen
#    for the first epoch while the new outputs learn;
# 3. a run trained **from scratch** on every tag for the same total epochs is the yardstick.
#
# Two questions: does the fine-tuned run learn the new tags nearly as well as training from
# scratch does, and do the old tags lose anything beyond chance (paired bootstrap: the same
# images resampled for both)?
#
# The two subsets are twins: the same metadata, images and seed, and every post they share
# in the same split (`animetag subset --splits-from`), so the parent never trained on an
# image the study tests on. Outside this notebook the recipe is:
#
# ```
# animetag subset ... --tags my_tags.txt --top-k 100 --splits-from PARENT_SUBSET --out NEW_SUBSET
# animetag train --data NEW_SUBSET --init-from PARENT_RUN --freeze-backbone-epochs 1 --run NEW_RUN
# animetag evaluate --data NEW_SUBSET --run NEW_RUN    # old and new tags apart, and the parent beside
# ```
#
# **Needs:** three trainings. On the `full` profile that is a GPU runtime and hours; the
# `sample` profile runs on a CPU in about seven minutes (two cores), on synthetic images.

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

from animetag import check_versions

print(check_versions())

# %% tags=["parameters"]
# Form fields (Colab shows them as a form). An environment variable ANIMETAG_<NAME>
# overrides each one (the only settings read from the environment): that is how the tests
# run the notebook on the sample.
# CHARACTERS: the new tags, the subset's most common characters. EPOCHS: the parent's
# epochs (0: the profile's); FINETUNE_EPOCHS: the fine-tuning's (0: half the parent's); the
# run from scratch gets both. FREEZE_EPOCHS: the first fine-tuning epochs with the backbone
# frozen. POLICY: the threshold policy, tuned on validation. ALLOW_CPU: the full profile
# without a GPU anyway.
PROFILE = "sample"  # @param ["sample", "full", "tiny"]
WORKSPACE = ""  # @param {type:"string"}
CHARACTERS = 10  # @param {type:"integer"}
EPOCHS = 0  # @param {type:"integer"}
FINETUNE_EPOCHS = 0  # @param {type:"integer"}
FREEZE_EPOCHS = 1  # @param {type:"integer"}
POLICY = "per-tag"  # @param ["per-tag", "global", "0.5", "P=R"] {allow-input: true}
BOOTSTRAP = 1000  # @param {type:"integer"}
ALLOW_CPU = False  # @param {type:"boolean"}

from animetag import params_from_env

(PROFILE, WORKSPACE, CHARACTERS, EPOCHS, FINETUNE_EPOCHS, FREEZE_EPOCHS, POLICY, BOOTSTRAP,
 ALLOW_CPU) = params_from_env(
    PROFILE=PROFILE, WORKSPACE=WORKSPACE, CHARACTERS=CHARACTERS, EPOCHS=EPOCHS, FINETUNE_EPOCHS=FINETUNE_EPOCHS,
    FREEZE_EPOCHS=FREEZE_EPOCHS, POLICY=POLICY, BOOTSTRAP=BOOTSTRAP, ALLOW_CPU=ALLOW_CPU).values()

# %%
from animetag import require_accelerator

print(require_accelerator(PROFILE, ALLOW_CPU))

# %% [markdown]
# ## The two subsets
# Notebook 01's subset, or its twin with `CHARACTERS` characters, is the one *with* the new
# tags; its twin without characters is the parent's. Built once from the metadata and images
# notebook 01 read (on the full profile those must still be where it read them).

# %%
from animetag import SubsetFolder, ensure_subset, local_subset, teach_study, train_config, workspace

ws = workspace(PROFILE, WORKSPACE)
out = ws.home / "teach" / PROFILE
without, with_ = teach_study.teach_subsets(ensure_subset(ws), out / "subsets", PROFILE, CHARACTERS)
without, with_ = local_subset(without), local_subset(with_)
EPOCHS = EPOCHS or (10 if PROFILE == "full" else train_config(PROFILE).epochs)
FINETUNE_EPOCHS = FINETUNE_EPOCHS or max(1, EPOCHS // 2)
for name, path in (("without", without), ("with", with_)):
    s = SubsetFolder(path)
    print(f"{name:>7} the new tags: {s.n_tags} tags, {s.split_size('train')} training and "
          f"{s.split_size('test')} test images  ({path})")
print(SubsetFolder(without).summary["splits_from"])

# %% [markdown]
# ## Train the parent, fine-tune it, and train from scratch
# Each run is read back when it finished before with the same settings; one stopped
# mid-training resumes.

# %%
from animetag import teach_study

runs = teach_study.teach(without, with_, out / "runs", PROFILE, EPOCHS, FINETUNE_EPOCHS, FREEZE_EPOCHS)

# %% [markdown]
# ## The study's table
# Every F1 is on the same test images, with thresholds tuned on the same validation images
# under `POLICY`, over the old tags (those the parent knows) and the new tags apart. The
# last row is what the fine-tuned tagger cost in all: its parent's training and its own.

# %%
from animetag import teach_study

table, differences = teach_study.teach_table(with_, runs, POLICY, n_boot=BOOTSTRAP)
print(f"{differences['n_old_tags']} old tags, {differences['n_new_tags']} new tags "
      f"({', '.join(differences['new_tags'])}); {differences['test_images']} test images; "
      f"policy {differences['policy']}")
table.round(3)

# %% [markdown]
# ## The answers
# The paired differences, each with its 95% interval from one bootstrap of the test images
# (both runs resampled together, so what both find hard or easy cancels out).

# %%
import json

from animetag import write_json_atomic

for key in ("old_tags_fine_tuned_minus_parent", "new_tags_fine_tuned_minus_scratch",
            "old_tags_fine_tuned_minus_scratch"):
    d = differences[key]
    print(f"{key}: " + "; ".join(f"{k} {v[0]:+.3f} ({v[1]:+.3f} to {v[2]:+.3f})" for k, v in d.items()))
print()
print("\n".join(teach_study.verdict(differences)))
write_json_atomic(out / "teach_table.json", {"table": json.loads(table.to_json(orient="index")), **differences})
if PROFILE != "full":
    print("(the sample's images are synthetic: the table shows the recipe works, not how well it does on Danbooru)")

# %% [markdown]
# ## Where to go from here
# - The fine-tuned run is a run folder like any other: evaluate it in notebook 04 (its
#   folder as `RUN`; `metrics.json` gains a `fine_tuned` block with the old and new tags and
#   the parent beside), tag a folder with it in notebook 05, and export it
#   (`animetag export`) for the WD-tagger clients.
# - Your own tags instead of the characters: write them in a file, one per line, and build
#   the new subset with `animetag subset --tags FILE --top-k 100 --splits-from PARENT_SUBSET`.
# - Frozen longer (`FREEZE_EPOCHS`) the old tags move less and the new ones learn from
#   the parent's features alone; the table tells which trade you prefer.
