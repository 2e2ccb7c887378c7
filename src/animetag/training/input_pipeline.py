"""tf.data input over the TFRecord shards: interleaved reads, parallel decode, decoded uint8
pixels cached in memory when they fit, shuffling, whole batches, prefetch.

The host only moves bytes: batches are uint8, and augmentation runs inside the training step
on the accelerator (`augment.Augment`). Under tf.distribute every replica must get a whole
batch: training batches drop the remainder (reshuffled each epoch, so a different handful of
images waits each time), and evaluation pads its last batch with zero-weight images.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import tensorflow as tf

from animetag.data.shards import list_shards, parse_example
from animetag.folders import SubsetFolder

AUTOTUNE = tf.data.AUTOTUNE
# share of the reclaimable memory that a decoded cache may take (the rest: model, TF, Python)
CACHE_SHARE = 0.5


def n_outputs_of(subset_dir: str | Path | SubsetFolder) -> int:
    """The subset's output rows (ratings and tags)."""
    return SubsetFolder.of(subset_dir).n_outputs


def split_size(subset_dir: str | Path | SubsetFolder, split: str) -> int:
    return SubsetFolder.of(subset_dir).split_size(split)


def _memory_bytes() -> int:
    """Memory a process can still take: MemAvailable (free memory plus the page cache and other
    reclaimable memory, as the kernel estimates it), else free pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def decoded_bytes(n_images: int, image_size: int) -> int:
    return n_images * image_size * image_size * 3


def choose_cache(cache: str, n_images: int, image_size: int, encoded_bytes: int = 0, reserved: int = 0) -> str:
    """'decoded' when the split's uint8 pixels, with `reserved` bytes already promised to other
    caches, take at most CACHE_SHARE of the reclaimable memory; else 'encoded' (the JPEG records,
    so shards on a slow disk such as Drive are read once) when those fit; else 'off'.
    (`memory` forces the decoded cache, `off` disables caching.)"""
    if cache == "off":
        return "off"
    if cache == "memory":
        return "decoded"
    budget = int(_memory_bytes() * CACHE_SHARE) - reserved
    if decoded_bytes(n_images, image_size) <= budget:
        return "decoded"
    return "encoded" if encoded_bytes <= budget else "off"


def batches_per_epoch(n_images: int, batch_size: int, training: bool) -> int:
    """Training: whole batches only; evaluation: every image (the last batch padded)."""
    return n_images // batch_size if training else math.ceil(n_images / batch_size)


def require_whole_batch(n_images: int, batch_size: int, subset_dir: str | Path, split: str) -> None:
    """Training needs at least one whole batch of the split."""
    if n_images < batch_size:
        raise ValueError(f"the '{split}' split of {subset_dir} has {n_images} images, fewer than one batch of "
                         f"{batch_size}; lower the batch size or build a larger subset")


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

    def decode(serialized):
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
