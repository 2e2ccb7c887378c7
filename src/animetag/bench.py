"""Benchmarks that print ratios measured side by side in one run.

`bench_tag`: images per second of Keras and of ONNX Runtime on the same files.

`bench_train`: the input pipeline alone, training fed from the shards, and the same model
and step fed in-memory tensors; input_efficiency = fit / synthetic. On a GPU it also
compares float32 with mixed precision + XLA, and reports the model's FLOPs per image with
the throughput they imply.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .colab import accelerator
from .config import train_config
from .model import build_model, flops_per_image
from .pipeline import make_dataset, n_tags_of
from .train import choose_precision, compile_model

# Dense bf16/fp16 tensor throughput, TFLOP/s, for the implied-utilisation figure.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0, "V100": 125.0}


def _images_per_second(fn, steps: int, batch: int) -> float:
    t = time.perf_counter()
    fn(steps)
    return steps * batch / (time.perf_counter() - t)


def _pipeline_rate(data: Path, cfg, batch: int, steps: int) -> float:
    """The training input pipeline alone (its iterator ends with this function)."""
    ds = make_dataset(data, "train", batch, cfg.image_size, training=True, augment=cfg.augment,
                      cache=cfg.cache, shuffle_buffer=cfg.shuffle_buffer, repeat=True)
    it = iter(ds)
    for _ in range(max(3, steps // 5)):  # fills the cache and the shuffle buffer
        next(it)

    def pull(n):
        for _ in range(n):
            next(it)

    return _images_per_second(pull, steps * 3, batch)


def _fit_rates(data: Path, cfg, n_tags: int, batch: int, steps: int, precision: str, jit: bool,
               rounds: int = 5) -> dict[str, Any]:
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_model(n_tags, cfg.image_size, cfg.model)
        compile_model(model, cfg, n_tags, steps_per_epoch=steps, jit=jit)
        real = make_dataset(data, "train", batch, cfg.image_size, training=True, augment=cfg.augment,
                            cache=cfg.cache, shuffle_buffer=cfg.shuffle_buffer, repeat=True)
        x, y = next(iter(real))
        synthetic = tf.data.Dataset.from_tensors((x, y)).repeat()

        def fit(ds):
            return lambda n: model.fit(ds, steps_per_epoch=n, epochs=1, verbose=0)

        fit(synthetic)(max(3, steps // 5))  # trace and compile both paths first
        fit(real)(max(3, steps // 5))
        # measure the two in adjacent pairs, several rounds, and keep the medians: drift in
        # the machine's speed then cancels within a pair instead of favouring one path
        fits, synths, ratios = [], [], []
        for _ in range(rounds):
            synths.append(_images_per_second(fit(synthetic), steps, batch))
            fits.append(_images_per_second(fit(real), steps, batch))
            ratios.append(fits[-1] / synths[-1])
        out = {"fit_img_s": float(np.median(fits)), "synthetic_img_s": float(np.median(synths)),
               "input_efficiency": float(np.median(ratios)),
               "input_efficiency_rounds": [round(r, 3) for r in ratios]}
        out["flops_per_image"] = flops_per_image(model)
        return out
    finally:
        keras.mixed_precision.set_global_policy(previous)


def bench_train(data: str | Path, profile: str = "sample", batch_size: int | None = None,
                steps: int = 60) -> dict[str, Any]:
    data = Path(data)
    cfg = train_config(profile, batch_size=batch_size)
    n_tags = n_tags_of(data)
    batch = cfg.batch_size
    acc = accelerator()

    out: dict[str, Any] = {"device": acc["name"], "profile": profile, "image_size": cfg.image_size,
                           "batch_size": batch, "steps": steps}
    out["pipeline_img_s"] = _pipeline_rate(data, cfg, batch, steps)
    base_precision = "float32"
    r = _fit_rates(data, cfg, n_tags, batch, steps, base_precision, jit=False)
    out.update({k: r[k] for k in ("fit_img_s", "synthetic_img_s", "input_efficiency", "input_efficiency_rounds")})
    out["pipeline_over_fit"] = out["pipeline_img_s"] / out["fit_img_s"]
    out["gflops_per_image_forward"] = r["flops_per_image"] / 1e9
    if acc["kind"] == "gpu":
        fast = choose_precision("auto", acc)
        m = _fit_rates(data, cfg, n_tags, batch, steps, fast, jit=True)
        out["mixed_xla"] = {"precision": fast, "fit_img_s": m["fit_img_s"], "synthetic_img_s": m["synthetic_img_s"],
                            "speedup_over_float32": m["synthetic_img_s"] / out["synthetic_img_s"]}
        # a training step costs about three forward passes (forward, two backward products)
        achieved = 3 * r["flops_per_image"] * m["synthetic_img_s"] / 1e12
        out["mixed_xla"]["achieved_tflops"] = achieved
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in str(acc["name"])), None)
        if peak:
            out["mixed_xla"]["utilisation"] = achieved / peak
    out = {k: (round(v, 3) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}
    return out


def bench_tag(run: str | os.PathLike, paths: list[str | os.PathLike], batch_size: int = 32,
              repeats: int = 3) -> dict[str, Any]:
    """Images per second of Keras and of ONNX Runtime on the same files, measured in one run."""
    import tempfile

    import onnxruntime as ort

    from .export import export_run
    from .tagging import Tagger, find_images

    tagger = Tagger(run, batch_size=batch_size)
    files = find_images(paths)
    t = time.perf_counter()
    _, x, errors = tagger.load_readable(files)
    skipped = len(errors)
    if not len(x):
        raise ValueError("no readable images to benchmark")
    prep = len(files) / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
        export_run(run, Path(d) / "e", "onnx", channel_order="rgb")
        sess = ort.InferenceSession(str(Path(d) / "e" / "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def keras_run():
        for i in range(0, len(x), batch_size):
            tagger.scores(x[i: i + batch_size])

    def onnx_run():
        for i in range(0, len(x), batch_size):
            sess.run(None, {name: x[i: i + batch_size]})

    rates = {}
    for label, fn in (("keras", keras_run), ("onnxruntime", onnx_run)):
        fn()  # warm up
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        rates[label] = repeats * len(x) / (time.perf_counter() - t)
    return {"images": len(x), "unreadable_skipped": skipped, "batch_size": batch_size, "image_size": tagger.size,
            "preprocess_img_s": round(prep, 1), "keras_img_s": round(rates["keras"], 1),
            "onnxruntime_img_s": round(rates["onnxruntime"], 1),
            "onnx_over_keras": round(rates["onnxruntime"] / rates["keras"], 3)}
