"""Training: the backend's distribution and precision from the accelerator, AdamW with warm-up and cosine decay,
validation F1 each epoch, checkpoints that let a disconnected Colab session resume, the best
model by validation F1-macro kept as `model.keras`.

A run folder holds `config.json`, `model.keras` (the portable inference model: float32, no
optimizer, stock Keras layers only), `checkpoints/` (the last epoch's training model with its
augmentation layer and optimizer state, and `state.json`), `history.csv` and TensorBoard `logs/`.

Under Keras' TensorFlow backend it trains with a tf.distribute strategy fed by tf.data; under
JAX with keras.distribution over every device of every process, fed by `data.loader`
(`training.runtime` is the seam). Every replica gets a whole batch: training batches drop the
remainder (reshuffled each epoch), and validation pads its last batch with zero-weight images
(weighted metrics; the validation loss is rescaled to the real images).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from animetag.config import TrainConfig, diff, train_config
from animetag.data.loader import batches_per_epoch, choose_cache, decoded_bytes, require_whole_batch
from animetag.data.subset import label_matrix
from animetag.folders import (
    RunFolder,
    SubsetFolder,
    atomic_path,
    data_differences,
    data_signature,
    run_lock,
    write_json_atomic,
)
from animetag.locks import folder_lock
from animetag.metrics import prior_baseline
from animetag.model.architecture import build_model, float32_copy
from animetag.training.compile import compile_model, core_of, lr_schedule, training_model, with_plugin_settings
from animetag.training.finetune import backbone_frozen, check_parent, initialise_from, set_backbone_trainable
from animetag.training.runtime import backend_module, make_runtime, process_settings
from animetag.vocab import split_outputs


class SettingsChanged(ValueError):
    """A run folder asked to resume with settings other than those it was started with."""


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite."""


def steps_per_execution(acc: dict[str, Any]) -> int:
    """Training steps run per call from the host: many on a TPU, where each call from the host
    is costly; one elsewhere (Keras' own default)."""
    return 32 if acc["kind"] == "tpu" else 1


def choose_precision(setting: str, acc: dict[str, Any]) -> str:
    """float16 on GPUs of compute capability 7.x (T4, V100), bfloat16 on 8.0+ and TPUs,
    float32 on CPUs and older GPUs, unless the setting names one."""
    if setting != "auto":
        return setting
    if acc["kind"] == "tpu":
        return "mixed_bfloat16"
    if acc["kind"] == "gpu":
        cc = acc.get("compute_capability") or (0, 0)
        if cc[0] >= 8:
            return "mixed_bfloat16"
        if cc[0] == 7:
            return "mixed_float16"
    return "float32"


def choose_xla(setting: str, acc: dict[str, Any], replicas: int = 1, backend: str = "tensorflow") -> bool:
    """Keras' `jit_compile`. Under JAX always on: every step is an XLA program there (`off`
    would run the step op by op). Under TensorFlow: on for one GPU; off on CPUs, where it
    slowed a ResNet-18 step several times; off on TPUs, which compile every step with XLA
    anyway. With several tf.distribute replicas Keras cannot compile the step (its variables
    live on several devices), so `on` is refused there."""
    if backend == "jax":
        return True
    if replicas > 1 and acc["kind"] != "tpu":
        if setting == "on":
            raise ValueError(f"xla: 'on' cannot be used with {replicas} replicas (Keras compiles one device's "
                             "step only); use --xla auto or off")
        return False
    if setting in ("on", "off"):
        return setting == "on" and acc["kind"] != "tpu"
    return acc["kind"] == "gpu"


def _save_atomic(model: keras.Model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def save_inference_model(model: keras.Model, path: Path) -> None:
    """model.keras: the tagger alone, in float32, uncompiled (no optimizer, no loss), so that
    `keras.saving.load_model` reads it in any process, without this package."""
    _save_atomic(float32_copy(core_of(model)), path)


class _ValidationPadding(keras.callbacks.Callback):
    """Rescales `val_loss` to the real validation images. Keras averages the per-image loss
    over every row of the padded batches; padding rows weigh 0 but count in that mean, so the
    logged value is (real images / padded rows) of the true mean. F1 and AUC take the sample
    weights and need no correction. Must come before the callbacks that log."""

    def __init__(self, real: int, padded: int):
        super().__init__()
        self.factor = padded / real

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "val_loss" in logs:
            logs["val_loss"] = float(logs["val_loss"]) * self.factor


class _LearningRate(keras.callbacks.Callback):
    """The learning rate at the end of each epoch, into the logs (and so history.csv)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class _NaNGuard(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"the loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}. "
                "Lower the learning rate (--lr), or train in float32 (--precision float32).")


class _Checkpoints(keras.callbacks.Callback):
    """Keeps model.keras (best validation F1-macro) and the last epoch with optimizer state.
    In a run of several processes every process checks and decides alike; only the first
    (`writer`) writes."""

    def __init__(self, run: RunFolder, best: float, monitor: str = "val_f1_macro", writer: bool = True,
                 local_scope=contextlib.nullcontext):
        super().__init__()
        self.run, self.best, self.monitor, self.writer = run, best, monitor, writer
        self.local_scope = local_scope
        if writer:
            (run / run.CHECKPOINT).parent.mkdir(exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        bad = [w.path for w in self.model.weights if not np.all(np.isfinite(np.asarray(w.numpy(), np.float32)))]
        if bad:  # never overwrite a good model or checkpoint with a broken one
            raise TrainingDiverged(f"non-finite weights after epoch {epoch + 1} (in {', '.join(bad[:3])}); "
                                   "model.keras and the checkpoint keep the last finite epoch")
        value = float(logs.get(self.monitor, float("nan")))
        best_epoch = None
        if math.isfinite(value) and value > self.best:
            self.best, best_epoch = value, epoch + 1
            if self.writer:
                with self.local_scope():
                    save_inference_model(self.model, self.run.model_path)
        if not self.writer:
            return
        with self.local_scope():
            _save_atomic(self.model, self.run / self.run.CHECKPOINT)
        state = self.run.state
        state.update({"epochs_done": epoch + 1, "best": self.best, "monitor": self.monitor})
        if best_epoch:
            state["best_epoch"] = best_epoch
        write_json_atomic(self.run / self.run.STATE, state)


def _keep_history(path: Path, done: int) -> None:
    """history.csv with the rows of the epochs finished (those that will run again dropped).
    A run stopped in its first epoch leaves the file empty or cut: then it starts afresh."""
    if not path.exists():
        return
    try:
        h = pd.read_csv(path)
        h = h[h["epoch"] < done]
    except (pd.errors.EmptyDataError, pd.errors.ParserError, KeyError):
        path.unlink()
        return
    with atomic_path(path) as tmp:
        h.to_csv(tmp, index=False)


def _as_now(recorded: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded settings as this version writes them: settings added since take their
    defaults (which is what the run used), so an older run still resumes."""
    try:
        return with_plugin_settings(TrainConfig.from_dict(recorded), older=True).to_dict()
    except (TypeError, ValueError):
        return recorded


def train(data: str | os.PathLike, run: str | os.PathLike, profile: str = "full",
          strategy: Any = None, callbacks: list | None = None,
          verbose: int | str = 2, coordinator: str | None = None, num_processes: int | None = None,
          process_id: int | None = None, **overrides: Any) -> dict[str, Any]:
    """Train (or resume) the run folder `run` on the subset `data`; returns a summary.

    Under Keras' backend (KERAS_BACKEND): TensorFlow with its tf.distribute strategy (or the
    one given as `strategy`), or JAX with keras.distribution over every device. Several
    processes (JAX only): `coordinator` (process 0's HOST:PORT), `num_processes` and
    `process_id`, or JAX's environment variables; each reads its own share of the shards, and
    process 0 writes the run folder.

    Run again after an interruption, it resumes from the last finished epoch with the
    optimizer state; it refuses (SettingsChanged) if the settings differ. It holds the run's
    lock throughout, so a second command on the same run refuses at once.
    """
    processes = process_settings(coordinator, num_processes, process_id)
    if processes is not None:
        if backend_module().Runtime.backend != "jax":
            raise ValueError("training in several processes runs under JAX: set KERAS_BACKEND=jax "
                             "(MultiWorkerMirroredStrategy with Keras 3's fit is broken upstream, keras#20585)")
        backend_module().initialize_processes(processes)
        if processes["process_id"] != 0:  # the lock is the writer's: the others only read the run folder
            return _train(data, run, profile, strategy, callbacks, verbose, **overrides)
    with folder_lock(run_lock(run), "animetag train"):
        return _train(data, run, profile, strategy, callbacks, verbose, **overrides)


def _extension_of(run: RunFolder, old: dict[str, Any] | None, record: dict[str, Any], cfg: TrainConfig,
                  done_before: int) -> int | None:
    """A run folder that holds a run already: the epochs it was started with, when the same
    run is asked for another number of epochs (an extension), else None (a resume). Any other
    change of settings or data is another run: refused (SettingsChanged), listing them."""
    if old is None:
        return None
    changes = (diff(_as_now(old.get("train", {})), record["train"], "train.")
               + [f"data.{c}" for c in data_differences(old.get("data", {}), record["data"])])
    others = [c for c in changes if not c.startswith("train.epochs:")]
    if others:
        raise SettingsChanged(f"{run} was started with other settings; use a new --run folder, "
                              "or the original settings, to resume (only the number of epochs may "
                              "change). Differences (was -> now):\n  " + "\n  ".join(others))
    if len(others) == len(changes):
        return None
    if cfg.epochs < done_before:
        raise SettingsChanged(f"{run} has trained {done_before} epochs already; ask for at least "
                              f"that many (epochs {cfg.epochs})")
    return int(old["train"]["epochs"])


def _train(data, run, profile, strategy, callbacks, verbose, **overrides: Any) -> dict[str, Any]:
    data, run = SubsetFolder.of(data), RunFolder.of(run)  # each file of the subset is read once
    cfg = with_plugin_settings(train_config(profile, **overrides))
    parent = None
    if cfg.init_from:
        parent = RunFolder.of(Path(cfg.init_from).resolve())
        if parent.path == run.path.resolve():
            raise ValueError(f"--init-from {cfg.init_from}: that is this run's own folder")
        cfg = replace(cfg, init_from=str(parent.path))
        check_parent(parent, cfg)  # before the run folder records anything
    sig = data_signature(data)
    n_train, n_val = sig["split_sizes"]["train"], sig["split_sizes"]["val"]
    require_whole_batch(n_train, cfg.batch_size, data, "train")  # before the run folder records settings
    if n_val < 1:
        raise ValueError(f"the 'val' split of {data} is empty: rebuild the subset with more images "
                         "or a larger val_fraction")
    rt = make_runtime(strategy)
    writer = rt.process_index == 0
    if writer:
        run.path.mkdir(parents=True, exist_ok=True)
    record = {"train": cfg.to_dict(), "data": sig, "subset": str(data.path.resolve())}  # where it was trained
    cfg_path = run / run.CONFIG
    old = run.config
    state = run.state
    done_before = int(state.get("epochs_done", 0))
    extended_from = _extension_of(run, old, record, cfg, done_before)
    acc = rt.acc
    precision = choose_precision(cfg.precision, acc)
    jit = choose_xla(cfg.xla, acc, rt.replicas, rt.backend)
    if cfg.batch_size % rt.replicas:
        raise ValueError(f"batch size {cfg.batch_size} does not divide among the {rt.replicas} devices: "
                         f"each needs the same share of a batch; use a multiple of {rt.replicas}")
    record["runtime"] = {"accelerator": {k: str(v) for k, v in acc.items()}, "precision": precision,
                         "xla": jit, "replicas": rt.replicas, "processes": rt.process_count, **rt.versions()}

    def record_settings() -> None:
        """config.json (and the run's own tags.csv), written once the model is built: a start
        that fails before then records nothing."""
        if not writer:
            return
        if old is None:
            shutil.copyfile(data / data.TAGS, run / run.TAGS)  # the run is usable on its own
            write_json_atomic(cfg_path, record)
        elif extended_from is not None:  # config.json stays the one record of the run
            old["train"]["epochs"] = cfg.epochs
            old.setdefault("extended", []).append({
                "from_epochs": extended_from, "to_epochs": cfg.epochs,
                "at_epoch": done_before, "runtime": record["runtime"]})
            write_json_atomic(cfg_path, old)

    keras.utils.set_random_seed(cfg.seed)
    steps = batches_per_epoch(n_train, cfg.batch_size, training=True)
    val_steps = batches_per_epoch(n_val, cfg.batch_size, training=False)
    # the training split is cached first; validation then gets what is left of the budget
    train_cached = choose_cache(cfg.cache, n_train, cfg.image_size) == "decoded"
    ds_train, train_args = rt.train_input(data, cfg, done_before)
    ds_val, val_args = rt.val_input(data, cfg, decoded_bytes(n_train, cfg.image_size) if train_cached else 0)
    # with one share of the shards per process, a share's whole batches may be fewer
    steps, val_steps = train_args.get("steps_per_epoch", steps), val_args.get("validation_steps", val_steps)

    done = done_before
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    t0 = time.time()
    try:
        with rt.scope():
            if done and (run / run.CHECKPOINT).exists():
                model = keras.saving.load_model(run / run.CHECKPOINT)
                # the schedule is laid out again from the recorded number of epochs on every resume:
                # after an extension the checkpoint may still hold the shorter run's schedule (an
                # extension stopped before its first epoch ended), which has decayed to 0 by then.
                # From the step reached, as if the run had been planned that long.
                model.optimizer.learning_rate = lr_schedule(cfg, steps)
            else:
                done = 0
                n_rat = sig["n_ratings"]
                core = build_model(sig["n_tags"], cfg.image_size, cfg.model,
                                   synchronized_bn=rt.synchronized_bn, n_ratings=n_rat,
                                   rating_probe=not cfg.rating_joint)
                if parent is not None:
                    record["parent"] = initialise_from(core, parent, data)
                    set_backbone_trainable(core, cfg.freeze_backbone_epochs == 0)
                model = training_model(core, cfg)
                compile_model(model, cfg, sig["n_tags"], steps, jit, steps_per_execution(acc), n_rat)
        record_settings()
        hist_path = run / run.HISTORY
        if writer:
            _keep_history(hist_path, done)

        def fit(until: int) -> None:
            logs = ([keras.callbacks.TensorBoard(str(run / run.LOGS), write_graph=False)] if tensorboard_works() else [])
            cbs = [_ValidationPadding(n_val, val_steps * cfg.batch_size), _NaNGuard(), _LearningRate(),
                   *(logs + [keras.callbacks.CSVLogger(str(hist_path), append=done > 0)] if writer else []),
                   _Checkpoints(run, float(run.state.get("best", -1.0)), writer=writer, local_scope=rt.local_scope),
                   *(callbacks or [])]
            with rt.fit_scope():
                model.fit(ds_train, validation_data=ds_val, epochs=until, initial_epoch=done,
                          callbacks=cbs, verbose=verbose if writer else 0, shuffle=False, **train_args, **val_args)

        if done < cfg.freeze_backbone_epochs:  # the head alone first (a run started --init-from)
            fit(min(cfg.freeze_backbone_epochs, cfg.epochs))
            done = min(cfg.freeze_backbone_epochs, cfg.epochs)
        if done < cfg.epochs and backbone_frozen(core_of(model)):  # then everything, the schedule going on
            with rt.scope():
                set_backbone_trainable(core_of(model), True)
                compile_model(model, cfg, sig["n_tags"], steps, jit, steps_per_execution(acc), sig["n_ratings"])
                model.optimizer.build(model.trainable_variables)
                model.optimizer.iterations.assign(done * steps)
        if done < cfg.epochs:
            fit(cfg.epochs)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    if not writer:  # the run folder is the first process's to read back
        return {"run": str(run), "process_id": rt.process_index, "epochs_done": cfg.epochs,
                "seconds": round(time.time() - t0, 1)}
    return _summary(data, run, model, done, time.time() - t0, precision, jit)


def tensorboard_works() -> bool:
    """Keras' TensorBoard callback writes through TensorFlow's summary ops: without TensorFlow
    (JAX alone) a run keeps history.csv and has no logs/."""
    return importlib.util.find_spec("tensorflow") is not None


def _summary(data: SubsetFolder, run: RunFolder, model: keras.Model, resumed_from: int, seconds: float,
             precision: str, jit: bool) -> dict[str, Any]:
    """What `train` returns: where the run is, its best epoch's validation figures, and the
    prior baseline (each tag at its training frequency) to read them against."""
    hist = pd.read_csv(run / run.HISTORY)
    best = hist.loc[hist["val_f1_macro"].idxmax()]
    Y = split_outputs(label_matrix(data.manifest, data.tags), data.n_ratings)[1]
    split = data.manifest["split"].to_numpy()
    return {
        "run": str(run), "model": str(run.model_path), "epochs_done": run.state.get("epochs_done", 0),
        "resumed_from_epoch": resumed_from, "seconds": round(seconds, 1),
        "params": int(model.count_params()), "precision": precision, "xla": jit,
        "best_epoch": int(best["epoch"]) + 1,
        "val_f1_micro": float(best["val_f1_micro"]), "val_f1_macro": float(best["val_f1_macro"]),
        "val_pr_auc": float(best.get("val_pr_auc", np.nan)),
        "val_rating_accuracy": float(best.get("val_rating_accuracy", np.nan)),
        "prior_baseline_val": prior_baseline(Y[split == "train"], Y[split == "val"]),
    }
