"""tf.data input over the TFRecord shards: interleaved reads, parallel decode, caching when
the split fits in memory, shuffling, training-only augmentation, batching, prefetch."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import tensorflow as tf

from .config import AugmentConfig
from .shards import list_shards, parse_example

AUTOTUNE = tf.data.AUTOTUNE


def n_tags_of(subset_dir: str | Path) -> int:
    return len(pd.read_csv(Path(subset_dir) / "tags.csv", keep_default_na=False))


def split_size(subset_dir: str | Path, split: str) -> int:
    m = pd.read_csv(Path(subset_dir) / "manifest.csv", usecols=["split"], keep_default_na=False)
    return int((m["split"] == split).sum())


def _memory_bytes() -> int:
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def choose_cache(cache: str, n_images: int, image_size: int, encoded_bytes: int = 0) -> str:
    """'decoded' when the split's uint8 pixels take under a quarter of free memory; else
    'encoded' (the JPEG records, so shards on a slow disk such as Drive are read once) when
    those fit; else 'off'. (`memory` forces the decoded cache, `off` disables caching.)"""
    if cache == "off":
        return "off"
    if cache == "memory":
        return "decoded"
    budget = _memory_bytes() // 4
    if n_images * image_size * image_size * 3 < budget:
        return "decoded"
    return "encoded" if encoded_bytes < budget else "off"


def augment_image(img: tf.Tensor, cfg: AugmentConfig, size: int) -> tf.Tensor:
    """One float image (0-255): flip, small translation (white border), colour jitter."""
    if cfg.flip:
        img = tf.image.random_flip_left_right(img)
    if cfg.crop > 0:
        pad = max(1, int(round(cfg.crop * size)))
        img = tf.pad(img, [[pad, pad], [pad, pad], [0, 0]], constant_values=255.0)
        img = tf.image.random_crop(img, [size, size, 3])
    if cfg.brightness > 0:
        img = tf.image.random_brightness(img, cfg.brightness * 255.0)
    if cfg.contrast > 0:
        img = tf.image.random_contrast(img, 1.0 - cfg.contrast, 1.0 + cfg.contrast)
    if cfg.saturation > 0:
        img = tf.image.random_saturation(img, 1.0 - cfg.saturation, 1.0 + cfg.saturation)
    return tf.clip_by_value(img, 0.0, 255.0)


def make_dataset(subset_dir: str | Path, split: str, batch_size: int, image_size: int | None = None,
                 training: bool = False, augment: AugmentConfig | None = None, cache: str = "auto",
                 shuffle_buffer: int = 2048, seed: int = 0, repeat: bool = False,
                 with_ids: bool = False) -> tf.data.Dataset:
    """Batches of (float32 images 0-255, multi-hot float32 labels[, ids]) from a split.

    Evaluation (training=False) reads in a fixed order and never augments.
    """
    files = list_shards(subset_dir, split)
    n_tags = n_tags_of(subset_dir)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=AUTOTUNE, deterministic=not training)

    stored = _shard_size(subset_dir)
    size = image_size or stored

    def decode(serialized):
        jpeg, y, pid = parse_example(serialized, n_tags)
        img = tf.io.decode_jpeg(jpeg, channels=3)
        if size != stored:  # shards hold the subset's size; resize only when asked for another
            img = tf.cast(tf.image.resize(img, [size, size], antialias=True), tf.uint8)
        return img, y, pid

    mode = choose_cache(cache, split_size(subset_dir, split), size, sum(Path(f).stat().st_size for f in files))
    if mode == "encoded":
        ds = ds.cache()
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=not training)
    if mode == "decoded":
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    aug = augment if (training and augment is not None) else None

    def to_float(img, y, pid):
        x = tf.cast(img, tf.float32)
        if aug is not None:
            x = augment_image(x, aug, size)
        return (x, y, pid) if with_ids else (x, y)

    ds = ds.map(to_float, num_parallel_calls=AUTOTUNE, deterministic=not training)
    drop = training and repeat
    ds = ds.batch(batch_size, drop_remainder=drop)
    if not repeat:  # a known length gives Keras its progress bar and epoch boundary
        n = split_size(subset_dir, split)
        ds = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / batch_size)))
    return ds.prefetch(AUTOTUNE)


def _shard_size(subset_dir: str | Path) -> int:
    import json

    with open(Path(subset_dir) / "subset.json", encoding="utf-8") as f:
        return int(json.load(f)["settings"]["image_size"])
