"""The training input of both backends side by side, on one subset, in one run: tf.data (the
TensorFlow backend's) and data.loader (the JAX backend's, no TensorFlow), decoding the cache
in worker processes and in threads. Prints images per second for the first pass (decoding
every JPEG into the decoded uint8 cache) and the steady state (batches from the cache), and
the ratios.

    python benchmarks/loader.py SUBSET [--batch 64] [--steps 200]
"""

import argparse
import itertools
import json
import time


def _rate(batches, n_batches: int, batch: int) -> float:
    t = time.perf_counter()
    for _ in range(n_batches):
        next(batches)
    return n_batches * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("subset")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    a = ap.parse_args()
    from animetag.data.loader import SplitLoader
    from animetag.folders import SubsetFolder

    n = SubsetFolder(a.subset).split_size("train")
    first = n // a.batch
    out = {"images": n, "image_size": SubsetFolder(a.subset).image_size}
    for name, processes in (("loader_processes", True), ("loader_threads", False)):
        loader = SplitLoader(a.subset, "train", a.batch, training=True, cache="memory", processes=processes)

        it = (batch for epoch in itertools.count() for batch in loader.epoch(epoch))
        out[f"{name}_first_pass_img_s"] = round(_rate(it, first, a.batch), 1)
        out[f"{name}_steady_img_s"] = round(_rate(it, a.steps, a.batch), 1)
    try:
        from animetag.training.tensorflow_backend import make_dataset
    except ImportError:
        print(json.dumps(out, indent=2))
        return
    it = iter(make_dataset(a.subset, "train", a.batch, training=True, cache="memory", repeat=True).as_numpy_iterator())
    out["tf_data_first_pass_img_s"] = round(_rate(it, first, a.batch), 1)
    out["tf_data_steady_img_s"] = round(_rate(it, a.steps, a.batch), 1)
    for k in ("first_pass", "steady"):
        for name in ("loader_processes", "loader_threads"):
            out[f"{name}_over_tf_data_{k}"] = round(out[f"{name}_{k}_img_s"] / out[f"tf_data_{k}_img_s"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
