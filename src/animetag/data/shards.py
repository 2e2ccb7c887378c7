"""TFRecord shards of a subset: images already decoded, resized and re-encoded as JPEG at the
training size; labels as tag indices."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from animetag.folders import SubsetFolder

SPLITS = ("train", "val", "test")


def shard_names(split: str, n_images: int, per_shard: int) -> list[str]:
    n = max(1, math.ceil(n_images / per_shard))
    return [f"{split}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]


def example_bytes(post_id: int, jpeg: bytes, labels: list[int]) -> bytes:
    import tensorflow as tf

    feat = {
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[post_id])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString()


class ShardWriter:
    """Writes one split round-robin into its shards (so each shard is a random mix)."""

    def __init__(self, folder: Path, split: str, n_images: int, per_shard: int):
        import tensorflow as tf

        self.paths = [folder / n for n in shard_names(split, n_images, per_shard)]
        self.writers = [tf.io.TFRecordWriter(str(p)) for p in self.paths]
        self.n = 0

    def write(self, post_id: int, jpeg: bytes, labels: list[int]) -> None:
        self.writers[self.n % len(self.writers)].write(example_bytes(post_id, jpeg, labels))
        self.n += 1

    def close(self) -> None:
        for w in self.writers:
            w.close()


def list_shards(subset_dir: str | Path, split: str) -> list[str]:
    shard_dir = Path(subset_dir) / SubsetFolder.SHARDS
    files = sorted(str(p) for p in shard_dir.glob(f"{split}-*.tfrecord"))
    if not files:
        raise FileNotFoundError(f"no '{split}' shards in {shard_dir}: is it a built subset?")
    return files


def parse_example(serialized, n_outputs: int):
    """A serialized example as (JPEG bytes, multi-hot float32 labels, id)."""
    import tensorflow as tf

    f = tf.io.parse_single_example(serialized, {
        "id": tf.io.FixedLenFeature([], tf.int64),
        "image": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.VarLenFeature(tf.int64),
    })
    idx = tf.sparse.to_dense(f["labels"])
    y = tf.minimum(tf.reduce_sum(tf.one_hot(idx, n_outputs, dtype=tf.float32), axis=0), 1.0)
    y = tf.ensure_shape(tf.reshape(y, [n_outputs]), [n_outputs])
    return f["image"], y, f["id"]


def peek(subset_dir: str | Path, split: str = "train", n: int = 8):
    """The first `n` examples of a split as (ids, uint8 images, multi-hot labels) numpy arrays."""
    import tensorflow as tf


    n_outputs = SubsetFolder.of(subset_dir).n_outputs
    ds = tf.data.TFRecordDataset(list_shards(subset_dir, split)).take(n)
    ids, images, labels = [], [], []
    for ser in ds:
        jpeg, y, pid = parse_example(ser, n_outputs)
        images.append(tf.io.decode_jpeg(jpeg, channels=3).numpy())
        labels.append(y.numpy())
        ids.append(int(pid))
    return np.array(ids), np.stack(images), np.stack(labels)
