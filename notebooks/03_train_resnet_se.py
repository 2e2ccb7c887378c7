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
# # 03 · Train the ResNet-SE under focal loss
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/animetag/animetag/blob/main/notebooks/03_train_resnet_se.ipynb)
#
# The thesis's model: a ResNet whose every residual block carries a Squeeze-and-Excitation
# block, trained with focal loss on 256 px images of the top-100 tags. This notebook builds
# it, checks its size against the thesis's (about 17M parameters), and trains it on the
# subset from notebook 01, logging validation F1-micro and F1-macro every epoch.
#
# **Needs:** a GPU runtime for the `full` profile (Runtime > Change runtime type > GPU;
# mixed precision and XLA are switched on by themselves). Put the run folder on Google
# Drive: when Colab disconnects, run the notebook again and training **resumes** from the
# last finished epoch. The `sample` profile trains a slim model on the built-in sample on
# a CPU in minutes.
#
# **Backends and TPUs:** the first cell picks Keras' backend from the runtime, with nothing
# to edit: TensorFlow where it is installed (Colab's GPU and CPU runtimes), else JAX (Colab's
# TPU runtimes ship JAX and no TensorFlow). Under JAX the run trains with
# `keras.distribution.DataParallel` over every local device (the 8 cores of a TPU, several
# GPUs), reading the same shards without TensorFlow. A run moves between backends: it resumes
# under either. Set `KERAS_BACKEND` before the first cell to choose yourself.

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

from animetag import check_versions, choose_backend

print("Keras backend:", choose_backend())  # before Keras is imported
print(check_versions())

# %% tags=["parameters"]
# Form fields (Colab shows them as a form). An environment variable ANIMETAG_<NAME>
# overrides each one (the only settings read from the environment): that is how `make demo`
# and the tests run the notebook on the sample.
# PROFILE "full": the thesis setting, on a GPU ("tiny": a smoke test in seconds). WORKSPACE:
# where subsets, runs and figures live (empty: MyDrive/animetag on Colab, ./data elsewhere).
# EPOCHS, BATCH_SIZE, LR: 0 for the profile's (sample 20 epochs, full 30). ALLOW_CPU: train
# the full profile without a GPU anyway (days).
PROFILE = "sample"  # @param ["sample", "full", "tiny"]
WORKSPACE = ""  # @param {type:"string"}
EPOCHS = 0  # @param {type:"integer"}
BATCH_SIZE = 0  # @param {type:"integer"}
LOSS = "focal"  # @param ["focal", "bce", "asl"] {allow-input: true}
LR = 0.0  # @param {type:"number"}
ALLOW_CPU = False  # @param {type:"boolean"}

from animetag import params_from_env

PROFILE, WORKSPACE, EPOCHS, BATCH_SIZE, LOSS, LR, ALLOW_CPU = params_from_env(
    PROFILE=PROFILE, WORKSPACE=WORKSPACE, EPOCHS=EPOCHS, BATCH_SIZE=BATCH_SIZE, LOSS=LOSS,
    LR=LR, ALLOW_CPU=ALLOW_CPU).values()
EPOCHS, BATCH_SIZE, LR = EPOCHS or None, BATCH_SIZE or None, LR or None

# %% [markdown]
# The notebook asks Colab for a GPU runtime. The `full` profile stops here on a CPU (it
# would take days) unless `ALLOW_CPU` is set; the `sample` profile is made for a CPU.

# %%
from animetag import require_accelerator

print(require_accelerator(PROFILE, ALLOW_CPU))

# %%
from animetag import ensure_subset, local_subset, workspace

ws = workspace(PROFILE, WORKSPACE)
subset = local_subset(ensure_subset(ws))  # on Colab, a subset on Drive is read from a local copy
print("subset:", subset)
print("run:   ", ws.run)

# %% [markdown]
# ## The model
# Stem convolution, batch norm, ReLU and max pooling; four stages of basic residual blocks
# of growing width, each with an SE block (squeeze by global average pooling, excitation
# by two Dense layers, reduction ratio 16); global average pooling, dropout, and a sigmoid
# Dense layer per tag, computed in float32 even under mixed precision. Beside it, as the WD
# taggers have it, a rating head: a softmax over `general`, `sensitive`, `questionable`,
# `explicit`, whose outputs come first. It learns from posts that have a rating, with
# cross-entropy at a small weight (`rating_loss_weight`, 0.05) so the tags stay in charge
# of the shared features.

# %%
from IPython.display import display

from animetag import build_model, n_ratings, read_subset, stage_table, train_config

cfg = train_config(PROFILE, epochs=EPOCHS, batch_size=BATCH_SIZE, loss=LOSS, lr=LR)
rows = read_subset(subset)[0]
R = n_ratings(rows)  # the rating head: 4 outputs before the tags (0 for a subset without ratings)
n_tags = len(rows) - R
model = build_model(n_tags, cfg.image_size, cfg.model, n_ratings=R)
display(stage_table(model))  # model.summary() lists every layer
full = build_model(100, 256, train_config("full").model)
print(f"this profile ({PROFILE}): {model.count_params():,} parameters for {n_tags} tags and {R} ratings "
      f"at {cfg.image_size} px")
print(f"full profile:          {full.count_params():,} parameters for 100 tags at 256 px "
      f"(thesis: about 17,000,000)")
del full

# %% [markdown]
# ## Train
# Running this cell again continues an interrupted run. Asking for more epochs (raise
# `EPOCHS` and run it again) extends a finished run from its last checkpoint: the cosine
# learning-rate schedule is laid out again over the new total, so the rate rises from where
# the shorter schedule had brought it (near zero) to where the longer one would be at this
# step, then decays to zero at the new last epoch; `config.json` records the extension. Any
# other changed setting is refused, naming what differs. The best epoch by validation F1-macro is kept as `model.keras`: the
# tagger alone, in float32 and without the optimizer, so it loads with
# `keras.saving.load_model` anywhere; the optimizer state lives in `checkpoints/`.
#
# How the GPU is kept busy: the images were decoded and resized once, when the subset was
# built; the host only moves uint8 pixels (kept decoded in memory when they fit), and the
# augmentation (flip, shift with a white border, brightness, contrast, saturation) runs
# inside the training step on the accelerator. Every training batch is whole, so with
# several GPUs every replica gets its share; the few images left over differ each epoch.
# Validation keeps every image: its last batch is padded with zero-weight blanks.

# %% [markdown]
# On Colab, TensorBoard shows the curves live while the next cell trains (the logs are in
# the run folder's `logs/`, on Drive).

# %%
if "google.colab" in sys.modules:
    get_ipython().run_line_magic("load_ext", "tensorboard")  # noqa: F821  (IPython's)
    get_ipython().run_line_magic("tensorboard", f"--logdir '{ws.run / 'logs'}'")  # noqa: F821

# %%
from animetag import train

result = train(subset, ws.run, profile=PROFILE, epochs=EPOCHS, batch_size=BATCH_SIZE, loss=LOSS, lr=LR)
{k: round(v, 3) if isinstance(v, float) else v for k, v in result.items() if k != "prior_baseline_val"}

# %% [markdown]
# ## Curves
# The dashed lines are what predicting each tag's training prior would score: a model that
# learnt nothing from the pixels.

# %%
import pandas as pd

from animetag import plots

hist = pd.read_csv(ws.run / "history.csv")
base = {f"prior {k}": v for k, v in result["prior_baseline_val"].items()}
plots.save(plots.history(hist, base), ws.figures, "03_history")
print(f"best epoch {result['best_epoch']}: val F1-micro {result['val_f1_micro']:.3f} "
      f"(prior {base['prior f1_micro']:.3f}), F1-macro {result['val_f1_macro']:.3f} "
      f"(prior {base['prior f1_macro']:.3f})")
print("model saved at", result["model"])
