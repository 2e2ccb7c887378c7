"""The training input of both backends side by side, on one subset, in one run: tf.data (the
TensorFlow backend's) and data.loader (the JAX backend's, no TensorFlow), decoding the cache
in worker processes and in threads. Prints images per second for the first pass (decoding
every JPEG into the decoded uint8 cache) and the steady state (batches from the cache), the
peak memory of each (each runs in a fresh process of its own), and the ratios.

    python benchmarks/loader.py SUBSET [--batch 64] [--steps 200]
    python benchmarks/loader.py --replica 25000 --size 256 [--work build/bench]

`--replica N` first writes a subset of the thesis' size: N images at `--size` px, 80% of
them in the train split, in shards of 2,048 as `animetag subset` writes them. Its images are
a small real subset's (built from the generated sample with detailed drawings, so each JPEG
weighs what a drawing does), repeated under new ids.
"""

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("loader_processes", "loader_threads", "tf_data")


def _rate(batches, n_batches: int, batch: int) -> float:
    t = time.perf_counter()
    for _ in range(n_batches):
        next(batches)
    return n_batches * batch / (time.perf_counter() - t)


def measure(subset: str, variant: str, batch: int, steps: int) -> dict:
    """One variant, in this (fresh) process: first pass, steady state, peak memory."""
    from animetag.folders import SubsetFolder

    n = SubsetFolder(subset).split_size("train")
    first = n // batch
    if variant == "tf_data":
        try:
            from animetag.training.tensorflow_backend import make_dataset
        except ImportError:
            return {}
        it = iter(make_dataset(subset, "train", batch, training=True, cache="memory", repeat=True)
                  .as_numpy_iterator())
    else:
        from animetag.data.loader import SplitLoader

        loader = SplitLoader(subset, "train", batch, training=True, cache="memory",
                             processes=variant == "loader_processes")
        it = (b for epoch in itertools.count() for b in loader.epoch(epoch))
    out = {"first_pass_img_s": round(_rate(it, first, batch), 1),
           "steady_img_s": round(_rate(it, steps, batch), 1)}
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out["peak_rss_gb"] = round(me.ru_maxrss * 1024 / 1e9, 2)  # KiB on Linux
    out["peak_rss_worker_gb"] = round(kids.ru_maxrss * 1024 / 1e9, 2)
    return out


def replica(n: int, size: int, work: Path) -> Path:
    """A subset of n images at `size` px (80% train), from a small real subset's images."""
    import pandas as pd

    from animetag.config import SubsetConfig
    from animetag.data.sample import generate
    from animetag.data.shards import ShardWriter, decode_example, list_shards, read_records
    from animetag.data.subset import build_subset

    out = work / f"replica-{n}-{size}"
    if (out / "manifest.csv").exists():
        return out
    sample, small = work / "replica-sample", work / f"replica-source-{size}"
    if not (sample / "sample.json").exists():
        generate(sample, 600, seed=0, detail=True)
    if not (small / "subset.json").exists():
        build_subset(sample / "metadata" / "posts.json", sample, small,
                     SubsetConfig(image_size=size, images_per_shard=256), progress=False)
    source = [decode_example(r) for split in ("train", "val", "test") for f in list_shards(small, split)
              for r in read_records(f)]
    manifest = pd.read_csv(small / "manifest.csv", keep_default_na=False, dtype={"md5": str, "tags": str})
    manifest = manifest.set_index("id")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "shards").mkdir(parents=True)
    for name in ("tags.csv", "subset.json"):
        shutil.copy(small / name, tmp / name)
    n_train = int(n * 0.8)
    sizes = {"train": n_train, "val": (n - n_train) // 2, "test": n - n_train - (n - n_train) // 2}
    rows, k = [], 0
    for split, count in sizes.items():
        writer = ShardWriter(tmp / "shards", split, count, 2048)
        for _ in range(count):
            pid, jpeg, labels = source[k % len(source)]
            new = 10**9 + k
            writer.write(new, jpeg, labels)
            rows.append({**manifest.loc[pid].to_dict(), "id": new, "split": split})
            k += 1
        writer.close()
    pd.DataFrame(rows).to_csv(tmp / "manifest.csv", index=False)
    os.replace(tmp, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("subset", nargs="?")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--replica", type=int, default=0, help="write and measure a subset of this many images")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--work", default="build/bench")
    ap.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in a child process
    a = ap.parse_args()
    if a.only:
        print(json.dumps(measure(a.subset, a.only, a.batch, a.steps)))
        return
    if a.replica:
        t = time.perf_counter()
        a.subset = str(replica(a.replica, a.size, Path(a.work)))
        print(f"replica {a.subset} ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    elif not a.subset:
        ap.error("give a SUBSET or --replica N")
    from animetag.data.loader import decoded_bytes
    from animetag.folders import SubsetFolder

    folder = SubsetFolder(a.subset)
    n = folder.split_size("train")
    out = {"images": n, "image_size": folder.image_size,
           "decoded_cache_gb": round(decoded_bytes(n, folder.image_size) / 1e9, 2),
           "shards_gb": round(sum(p.stat().st_size for p in (folder.path / "shards").glob("train-*")) / 1e9, 2)}
    for variant in VARIANTS:
        p = subprocess.run([sys.executable, __file__, a.subset, "--only", variant, "--batch", str(a.batch),
                            "--steps", str(a.steps)], capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"{variant} failed:\n{p.stderr[-3000:]}")
        for k, v in json.loads(p.stdout.strip().splitlines()[-1]).items():
            out[f"{variant}_{k}"] = v
    if "tf_data_first_pass_img_s" in out:
        for k in ("first_pass_img_s", "steady_img_s", "peak_rss_gb"):
            for name in ("loader_processes", "loader_threads"):
                out[f"{name}_over_tf_data_{k}"] = round(out[f"{name}_{k}"] / out[f"tf_data_{k}"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
