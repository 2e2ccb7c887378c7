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
# # 06 · The ablation study the thesis planned
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/animetag/animetag/blob/main/notebooks/06_ablation.ipynb)
#
# The thesis ends with its plan: other architectures, other losses, more tags. This
# notebook trains the variants a researcher compares first, on **one subset with one
# budget** (the same epochs, images and seed), and scores each on the same test images
# under **one threshold policy** (tuned on validation), with 95% bootstrap intervals:
#
# | variant | what it asks |
# | --- | --- |
# | ResNet-SE, focal | the thesis model: the reference row |
# | ResNet without SE | what do the Squeeze-and-Excitation blocks add? |
# | ResNet-SE, BCE / ASL | is focal loss the right loss? (a published sweep on Danbooru found plain BCE slightly ahead) |
# | a keras.applications backbone | does an ImageNet-pretrained network (ConvNeXt-Tiny, EfficientNetV2-B0) beat training from scratch? |
# | ResNet-SE, more tags | does learning more tags help or hurt the top ones? (scored on the same top tags) |
#
# Beside the F1: parameters, model size and training images per second. Each variant is
# a run folder of its own (notebooks 04 and 05 read it); running the notebook again trains
# only what is missing, and a variant interrupted mid-training resumes.
#
# **Needs:** a GPU runtime for the `full` profile: six trainings of the thesis setting, a
# few hours on a T4 at 10 epochs each. The `sample` profile runs it all on a CPU in
# minutes, on synthetic images: its table shows the study works, not which variant wins.

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
# overrides each one (the only settings read from the environment): that is how `make demo`
# and the tests run the notebook on the sample.
# EPOCHS: the one budget of every variant (0: 10 on full, the profile's on sample).
# BACKBONE: the keras.applications backbone; PRETRAINED: start it from ImageNet weights
# (downloaded; the sample profile always trains it from scratch). MORE_TAGS: the top-K
# general tags of the "more tags" variant (0: leave it out). POLICY: the threshold policy
# every variant is scored under. ALLOW_CPU: the full profile without a GPU anyway.
PROFILE = "sample"  # @param ["sample", "full", "tiny"]
WORKSPACE = ""  # @param {type:"string"}
EPOCHS = 0  # @param {type:"integer"}
BACKBONE = "efficientnetv2_b0"  # @param ["efficientnetv2_b0", "convnext_tiny"] {allow-input: true}
PRETRAINED = True  # @param {type:"boolean"}
MORE_TAGS = 200  # @param {type:"integer"}
POLICY = "global"  # @param ["global", "per-tag", "0.5", "P=R"] {allow-input: true}
BOOTSTRAP = 1000  # @param {type:"integer"}
ALLOW_CPU = False  # @param {type:"boolean"}

from animetag import params_from_env

PROFILE, WORKSPACE, EPOCHS, BACKBONE, PRETRAINED, MORE_TAGS, POLICY, BOOTSTRAP, ALLOW_CPU = params_from_env(
    PROFILE=PROFILE, WORKSPACE=WORKSPACE, EPOCHS=EPOCHS, BACKBONE=BACKBONE, PRETRAINED=PRETRAINED,
    MORE_TAGS=MORE_TAGS, POLICY=POLICY, BOOTSTRAP=BOOTSTRAP, ALLOW_CPU=ALLOW_CPU).values()

# %%
from animetag import require_accelerator

print(require_accelerator(PROFILE, ALLOW_CPU))

# %% [markdown]
# ## The subsets
# The base subset is notebook 01's. The "more tags" variant needs a second one: built here
# once from the metadata and images the base subset's `subset.json` records, with its
# settings (size, seed, image count) and `MORE_TAGS` general tags. On the full profile
# that decodes the images again (several minutes), and the metadata and images must still
# be where notebook 01 read them.

# %%
from animetag import SubsetFolder, ablation, ensure_subset, local_subset, train_config, workspace

ws = workspace(PROFILE, WORKSPACE)
base = SubsetFolder(local_subset(ensure_subset(ws)))
settings = base.summary["settings"]
subsets = {"base": base.path}
if MORE_TAGS and MORE_TAGS <= settings["top_k"]:
    print(f"MORE_TAGS={MORE_TAGS} is not more than the base subset's {settings['top_k']}: the variant is left out")
    MORE_TAGS = 0
if MORE_TAGS:
    more = ws.subset.with_name(f"{ws.subset.name}-top{MORE_TAGS}")
    subsets["more_tags"] = local_subset(ablation.more_tags_subset(ws.subset, more, MORE_TAGS, PROFILE))
EPOCHS = EPOCHS or (10 if PROFILE == "full" else train_config(PROFILE).epochs)
out = ws.home / "ablation" / PROFILE
for name, path in subsets.items():
    s = SubsetFolder(path)
    print(f"{name:>9}: {s.n_outputs - s.n_ratings} tags, {s.split_size('train')} training and "
          f"{s.split_size('test')} test images  ({path})")
print(f"every variant: {EPOCHS} epochs, scored under the {POLICY!r} threshold policy; runs in {out}")

# %% [markdown]
# ## Train and evaluate every variant
# Each line says whether a variant is trained or read back. A variant trained before with
# the same settings on the same subset is not trained again; change a setting (or `EPOCHS`)
# and that variant alone is trained afresh.

# %%
from animetag import ablation

weights = "imagenet" if PRETRAINED and PROFILE == "full" else ""
if PRETRAINED and not weights:
    print(f"{BACKBONE} trains from scratch on the sample profile (no download in tests)")
variants = ablation.thesis_variants(BACKBONE, weights, more_tags=bool(MORE_TAGS))
results = ablation.run_ablation(variants, subsets, out, PROFILE, EPOCHS, policy=POLICY, n_boot=BOOTSTRAP)
results.to_csv(out / "ablation.csv", index=False)
ablation.ablation_table(results)

# %% [markdown]
# ## The study in one figure
# Left: F1-micro and F1-macro with their 95% intervals; the dotted lines are the thesis
# model's. Right: what each costs to train (images per second over the whole run,
# compilation and validation included), its parameters and model size.
#
# Whether a variant beats the thesis model is read from the table's ΔF1 column, not from
# overlapping intervals: both are scored on the same test images, so the difference gets
# its own interval from a paired bootstrap (the images resampled together), which cancels
# what both find hard or easy and is much narrower.
# It covers the sampling of the test images, not training's own randomness: another seed
# moves a sample run by about 0.01, so before trusting a small gain, add the same variant
# with another seed (`{"seed": 1}`) and see whether it holds.

# %%
from animetag import plots, policies

plots.save(plots.ablation(results, policies.get(POLICY).label), ws.figures, "06_ablation")
for key in ("f1_micro", "f1_macro"):
    print(ablation.best_by(results, key))
if PROFILE == "sample":
    print("(the sample's images are synthetic: these rows show the study runs, not which variant is better)")

# %% [markdown]
# ## Where to go from here
# - Every row's run folder holds `metrics.json` with every policy and per category, and
#   `per_tag.csv`: open one in notebook 04 (its folder as RUN).
# - Another backbone or loss is one registered function (README, "Adding a backbone or a
#   loss"); add a `Variant` with its name to compare it here:
#   `Variant("ConvNeXt-Tiny, BCE", {"model": {"backbone": "convnext_tiny", "weights": "imagenet"}, "loss": "bce"})`.
# - For what each backbone costs on a GPU without training, `benchmarks/step_rate.py
#   --compare plugins` times every registered backbone and loss beside the thesis model.
