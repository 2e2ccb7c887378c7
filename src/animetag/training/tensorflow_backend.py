"""Everything TensorFlow-specific in training, in one place: the tf.data input over the
TFRecord shards, the tf.distribute strategies (TPU, several GPUs, the default), and the
accelerator as TensorFlow sees it. `training.runtime` is the interface the rest of the package
uses; nothing else in `training` imports TensorFlow.

tf.data input: interleaved reads, parallel decode, decoded uint8 pixels cached in memory when
they fit, shuffling, whole batches, prefetch.

The host only moves bytes: batches are uint8, and augmentation runs inside the training step
on the accelerator (`augment.Augment`). Under tf.distribute every replica must get a whole
batch: training batches drop the remainder (reshuffled each epoch, so a different handful of
images waits each time), and evaluation pads its last batch with zero-weight images.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from animetag.data.loader import batches_per_epoch, choose_cache, require_whole_batch
from animetag.data.shards import list_shards
from animetag.folders import SubsetFolder
from animetag.training.devices import tpu_hints

AUTOTUNE = tf.data.AUTOTUNE


def make_dataset(subset_dir: str | Path, split: str, batch_size: int, image_size: int | None = None,
                 training: bool = False, cache: str = "auto", shuffle_buffer: int = 2048, seed: int = 0,
                 repeat: bool = False, with_ids: bool = False, pad_to_batch: bool = False,
                 reserved_cache_bytes: int = 0) -> tf.data.Dataset:
    """Batches of (uint8 images, multi-hot float32 labels[, ids]) from a split.

    training: shuffled, and only whole batches (the few images left over differ each epoch).
    Evaluation reads in a fixed order and keeps every image; with `pad_to_batch` the last batch
    is filled up with blank zero-weight images and each element gains a third item, the sample
    weight (1 for a real image, 0 for padding), so that every replica gets a whole batch and
    weighted metrics count each real image once.
    """
    if batch_size < 1:
        raise ValueError(f"batch size: {batch_size} must be at least 1")
    subset = SubsetFolder.of(subset_dir)  # a SubsetFolder passed in is not read again
    files = list_shards(subset, split)
    n_outputs = subset.n_outputs
    n = subset.split_size(split)
    if training:
        require_whole_batch(n, batch_size, subset_dir, split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=AUTOTUNE, deterministic=not training)

    stored = subset.image_size
    size = image_size or stored

    def decode(serialized):  # noqa: E306
        jpeg, y, pid = parse_example(serialized, n_outputs)
        img = tf.io.decode_jpeg(jpeg, channels=3)
        if size != stored:  # shards hold the subset's size; resize only when asked for another
            img = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(img, [size, size], antialias=True), 0, 255)),
                          tf.uint8)
        img = tf.ensure_shape(img, [size, size, 3])
        return img, y, pid

    mode = choose_cache(cache, n, size, sum(Path(f).stat().st_size for f in files), reserved_cache_bytes)
    if mode == "encoded":
        ds = ds.cache()
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=not training)
    if mode == "decoded":
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    steps = batches_per_epoch(n, batch_size, training)
    if pad_to_batch and not training:
        ds = ds.map(lambda img, y, pid: (img, y, pid, tf.constant(1.0)))
        pad = steps * batch_size - n
        blank = (tf.zeros([size, size, 3], tf.uint8), tf.zeros([n_outputs], tf.float32), tf.constant(-1, tf.int64),
                 tf.constant(0.0))
        ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(pad))

    def arrange(img, y, pid, *weight):
        out = (img, y, *weight)
        return (*out, pid) if with_ids else out

    ds = ds.map(arrange, num_parallel_calls=AUTOTUNE, deterministic=not training)
    ds = ds.batch(batch_size, drop_remainder=training or pad_to_batch, num_parallel_calls=AUTOTUNE,
                  deterministic=not training)
    if not repeat:  # a known length gives Keras its progress bar and epoch boundary
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(AUTOTUNE)


def parse_example(serialized, n_outputs: int):
    """A serialized example as (JPEG bytes, multi-hot float32 labels, id)."""
    f = tf.io.parse_single_example(serialized, {
        "id": tf.io.FixedLenFeature([], tf.int64),
        "image": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.VarLenFeature(tf.int64),
    })
    idx = tf.sparse.to_dense(f["labels"])
    y = tf.minimum(tf.reduce_sum(tf.one_hot(idx, n_outputs, dtype=tf.float32), axis=0), 1.0)
    y = tf.ensure_shape(tf.reshape(y, [n_outputs]), [n_outputs])
    return f["image"], y, f["id"]


# -- the accelerator and the strategy --------------------------------------------------------------

def tpu_resolver():
    """A TPUClusterResolver for the TPU this process can use, or None.

    On a TPU VM the chips are local, and only `tpu="local"` finds them (a bare
    TPUClusterResolver() raises there); a TPU node is found from the environment. The
    resolver is never asked where there is no sign of a TPU."""
    hints = tpu_hints()
    resolver_cls = tf.distribute.cluster_resolver.TPUClusterResolver
    if hints["vm"]:
        try:
            return resolver_cls(tpu="local")
        except (ValueError, RuntimeError, KeyError, tf.errors.OpError):
            pass
    if hints["node"]:
        try:
            resolver = resolver_cls()
            if resolver.master():
                return resolver
        except (ValueError, RuntimeError, KeyError, tf.errors.OpError):
            pass
    return None


def accelerator() -> dict[str, object]:
    """What will run the model, as TensorFlow sees it. For a TPU, `count` is the number of TPU
    cores TensorFlow lists, or None before the TPU system is initialised (the strategy then
    reports its replicas)."""
    if tpu_resolver() is not None:
        cores = len(tf.config.list_logical_devices("TPU"))
        return {"kind": "tpu", "name": "TPU", "count": cores or None, "compute_capability": None}
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return {"kind": "gpu", "name": details.get("device_name", "GPU"), "count": len(gpus),
                "compute_capability": details.get("compute_capability")}
    return {"kind": "cpu", "name": "CPU", "count": 1, "compute_capability": None}


def choose_strategy(acc: dict[str, Any]) -> tf.distribute.Strategy:
    """TPU, several GPUs (MirroredStrategy), one GPU, or the default (CPU) strategy."""
    if acc["kind"] == "tpu":
        resolver = tpu_resolver()
        if resolver is None:
            raise RuntimeError("a TPU was detected but cannot be connected to any more")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if acc["kind"] == "gpu" and acc["count"] > 1:
        return tf.distribute.MirroredStrategy()
    # one GPU or the CPU: the default strategy (TensorFlow places the step on the GPU), under
    # which Keras compiles the step with XLA as it does without tf.distribute
    return tf.distribute.get_strategy()


class TensorFlowRuntime:
    """Training under TensorFlow: a tf.distribute strategy over this machine's devices, fed by
    tf.data. One process (MultiWorkerMirroredStrategy with Keras 3's fit is broken upstream,
    keras-team/keras#20585: many processes are the JAX backend's)."""

    backend = "tensorflow"
    process_index, process_count = 0, 1

    def __init__(self, acc: dict[str, Any] | None = None, strategy: tf.distribute.Strategy | None = None):
        self.acc = acc or accelerator()
        self.strategy = strategy or choose_strategy(self.acc)
        self.replicas = int(self.strategy.num_replicas_in_sync)

    @property
    def synchronized_bn(self) -> bool:  # BatchNorm over the global batch: SyncBatchNorm across replicas
        return self.replicas > 1

    def scope(self) -> AbstractContextManager:
        """Where the model is built: its variables mirrored over the strategy's replicas."""
        return self.strategy.scope()

    @staticmethod
    def fit_scope() -> AbstractContextManager:  # Keras' fit finds the strategy in the model
        return contextlib.nullcontext()

    local_scope = fit_scope

    def train_input(self, data: SubsetFolder, cfg, initial_epoch: int, repeat: bool = False
                    ) -> tuple[Any, dict[str, Any]]:
        """(fit's x, fit's extra arguments) for the training split."""
        return make_dataset(data, "train", cfg.batch_size, cfg.image_size, training=True, cache=cfg.cache,
                            shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, repeat=repeat), {}

    def val_input(self, data: SubsetFolder, cfg, reserved_cache_bytes: int) -> tuple[Any, dict[str, Any]]:
        return make_dataset(data, "val", cfg.batch_size, cfg.image_size, cache=cfg.cache, pad_to_batch=True,
                            reserved_cache_bytes=reserved_cache_bytes), {}

    @staticmethod
    def repeated(batch) -> tf.data.Dataset:
        """One batch, again and again: the training step with no input to wait for."""
        return tf.data.Dataset.from_tensors(batch).repeat()

    def versions(self) -> dict[str, str]:
        return {"backend": "tensorflow", "tensorflow": tf.__version__, "keras": keras.__version__}


Runtime = TensorFlowRuntime
