"""Reading a subset's shards with TensorFlow and without it, side by side in one run: images
per second through each reader (records, decoded JPEGs, labels), and the ratio.

    python benchmarks/shard_read.py --images 2000 --size 256 --work build/bench

With TensorFlow: tf.data (TFRecordDataset, parse_single_example, decode_jpeg), one pass,
then with `num_parallel_calls=AUTOTUNE`. Without: `shards.read_records` +
`shards.decode_example` + Pillow, one process, then one worker process per core (spawned,
as a JAX runtime needs). The figures say what a runtime without TensorFlow pays to read the
same shards, and whether a decoded-pixel cache is needed to feed an accelerator.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import time
from pathlib import Path


def _decode_shard(path: str) -> int:
    import numpy as np
    from PIL import Image

    from animetag.data.shards import decode_example, read_records

    n = 0
    for record in read_records(path):
        _, jpeg, idx = decode_example(record)
        np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--work", default="build/bench")
    a = ap.parse_args()
    from animetag.config import SubsetConfig
    from animetag.data.sample import generate
    from animetag.data.shards import list_shards
    from animetag.data.subset import build_subset

    work = Path(a.work)
    sample = work / f"sample-{a.images}"
    if not (sample / "sample.json").exists():
        generate(sample, a.images, seed=0, detail=True)
    subset = work / f"subset-{a.images}-{a.size}-read200"
    if not (subset / "subset.json").exists():
        build_subset(sample / "metadata" / "posts.json", sample, subset,
                     SubsetConfig(image_size=a.size, max_images=a.images, images_per_shard=200), progress=False)
    shards = list_shards(subset, "train")
    out: dict[str, float | int] = {"image_size": a.size, "shards": len(shards), "cores": os.cpu_count() or 1}

    t = time.time()
    n = sum(_decode_shard(s) for s in shards)
    out["images"] = n
    out["without_tf_img_per_s"] = round(n / (time.time() - t), 1)
    ctx = mp.get_context("spawn")
    with ctx.Pool(os.cpu_count() or 1) as pool:
        pool.map(_decode_shard, shards[:1])  # the workers started and imported before the clock
        t = time.time()
        m = sum(pool.map(_decode_shard, shards))
    out["without_tf_workers_img_per_s"] = round(m / (time.time() - t), 1)

    try:
        import tensorflow as tf
    except ImportError:
        out["with_tf"] = "TensorFlow is not installed here"
    else:
        from animetag.data.shards import parse_example
        from animetag.folders import SubsetFolder

        n_out = SubsetFolder(subset).n_outputs

        def one(ser):
            jpeg, y, _ = parse_example(ser, n_out)
            return tf.io.decode_jpeg(jpeg, channels=3), y

        for key, par in (("with_tf_img_per_s", None), ("with_tf_parallel_img_per_s", tf.data.AUTOTUNE)):
            ds = tf.data.TFRecordDataset(shards).map(one, num_parallel_calls=par)
            t = time.time()
            k = sum(1 for _ in ds)
            out[key] = round(k / (time.time() - t), 1)
        out["without_over_with_tf"] = round(out["without_tf_img_per_s"] / out["with_tf_img_per_s"], 2)
        out["workers_over_tf_parallel"] = round(out["without_tf_workers_img_per_s"] /
                                                out["with_tf_parallel_img_per_s"], 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
