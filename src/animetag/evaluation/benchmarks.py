"""Benchmarks that print ratios measured side by side in one run.

`bench_tag`: images per second of Keras and of ONNX Runtime on the same files.

`bench_train`: what the host can feed and what the accelerator needs. It measures the
training input pipeline (first pass: JPEG decoding; then the decoded uint8 cache), the same
pipeline with the augmentation done on the host instead of the accelerator (what it would
cost there), and the training step fed from the pipeline and from one in-memory batch
(input_efficiency = fed / in-memory; input_wait_share = 1 - that). From the model's FLOPs it
prints the step rates a T4, an L4 and an A100 would reach at a stated utilisation, so the
host feed can be set beside them. On a GPU it also compares float32 with mixed precision +
XLA and reports the model FLOP utilisation.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from animetag.config import train_config
from animetag.evaluation.published import PEAK_TFLOPS
from animetag.folders import SubsetFolder
from animetag.model.architecture import build_model, flops_per_image
from animetag.model.augmentation import Augment
from animetag.tagging.tagger import Tagger, find_images
from animetag.training.compile import compile_model, training_model
from animetag.training.fit import choose_precision
from animetag.training.runtime import make_runtime

# the share of that peak a ResNet training step typically reaches (a stated assumption)
UTILISATION = (0.20, 0.35)
TARGETS = ("T4", "L4", "A100")


def needed_rates(flops_forward: int, utilisation: tuple[float, float] = UTILISATION) -> dict[str, list[float]]:
    """Images per second each target accelerator would train this model at, at the low and
    high end of `utilisation` (a training step costs about three forward passes)."""
    step = 3.0 * flops_forward
    return {name: [round(PEAK_TFLOPS[name] * 1e12 * u / step, 1) for u in utilisation] for name in TARGETS}


def _pull(it, n: int) -> None:
    for _ in range(n):
        next(it)


def _feed_rates(rt, data: SubsetFolder, cfg, batch: int, steps: int) -> dict[str, float]:
    """The training input alone (the backend's: tf.data, or data.loader under JAX): its first
    pass (decoding every JPEG into the cache), then the steady state; and the steady state
    with the augmentation run on the host's CPU."""
    n = data.split_size("train")
    ds, _ = rt.train_input(data, cfg, 0, repeat=True)
    it = iter(ds)
    first = max(1, n // batch)
    t = time.perf_counter()
    _pull(it, first)  # the first pass decodes and fills the cache
    decode = first * batch / (time.perf_counter() - t)
    _pull(it, 3)
    t = time.perf_counter()
    _pull(it, steps)
    feed = steps * batch / (time.perf_counter() - t)

    aug = Augment.from_settings(cfg.augment, seed=0)
    with keras.device("cpu:0"):
        for x, _y in itertools.islice(it, 2):
            keras.ops.convert_to_numpy(aug(x, training=True))  # trace first
        t = time.perf_counter()
        for x, _y in itertools.islice(it, steps):
            keras.ops.convert_to_numpy(aug(x, training=True))
    host_aug = steps * batch / (time.perf_counter() - t)
    del it
    return {"first_pass_decode_img_s": decode, "host_feed_img_s": feed, "host_feed_if_augmenting_on_host_img_s": host_aug}


def _fit_rates(rt, data: SubsetFolder, cfg, n_outputs: int, batch: int, steps: int, precision: str, jit: bool,
               rounds: int = 3) -> dict[str, Any]:
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        n_rat = data.n_ratings
        with rt.scope():
            core = build_model(n_outputs - n_rat, cfg.image_size, cfg.model, n_ratings=n_rat)
            model = training_model(core, cfg)
            compile_model(model, cfg, n_outputs - n_rat, steps_per_epoch=steps, jit=jit, n_ratings=n_rat)
        real, _ = rt.train_input(data, cfg, 0, repeat=True)
        x, y = next(iter(real))
        synthetic = rt.repeated((x, y))

        def rate(ds) -> float:
            t = time.perf_counter()
            with rt.fit_scope():
                model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
            return steps * batch / (time.perf_counter() - t)

        rate(synthetic)  # trace and compile both paths first (and fill the cache)
        rate(real)
        # measure the two in adjacent pairs, several rounds, and keep the medians: drift in
        # the machine's speed then cancels within a pair instead of favouring one path
        synths, fits = [], []
        for _ in range(rounds):
            synths.append(rate(synthetic))
            fits.append(rate(real))
        ratios = [f / s for f, s in zip(fits, synths)]
        eff = float(np.median(ratios))
        return {"fit_img_s": float(np.median(fits)), "step_img_s": float(np.median(synths)),
                "input_efficiency": eff, "input_wait_share": max(0.0, 1.0 - eff),
                "input_efficiency_rounds": [round(r, 3) for r in ratios], "flops_per_image": flops_per_image(core)}
    finally:
        keras.mixed_precision.set_global_policy(previous)


def bench_train(data: str | Path, profile: str = "sample", batch_size: int | None = None, steps: int = 200,
                fit_steps: int | None = None, image_size: int | None = None, precision: str | None = None,
                compare_float32: bool = True) -> dict[str, Any]:
    """Host feed against the training step, side by side (see the module's docstring).

    steps: batches pulled to time the pipeline; fit_steps: training steps per timed round
    (default 50 on an accelerator, 3 on a CPU, where a 256 px step is slow)."""
    data = SubsetFolder.of(data)  # read once, passed on
    cfg = train_config(profile, batch_size=batch_size, image_size=image_size)
    n_outputs = data.n_outputs
    batch = cfg.batch_size
    rt = make_runtime()
    acc = rt.acc
    fit_steps = fit_steps or (50 if acc["kind"] != "cpu" else 3)

    out: dict[str, Any] = {"device": acc["name"], "backend": rt.backend, "profile": profile,
                           "image_size": cfg.image_size, "batch_size": batch, "train_images": data.split_size("train")}
    out.update(_feed_rates(rt, data, cfg, batch, steps))
    out["host_augmentation_slowdown"] = out["host_feed_img_s"] / out["host_feed_if_augmenting_on_host_img_s"]
    base = precision or ("float32" if acc["kind"] == "cpu" else choose_precision("auto", acc))
    jit = acc["kind"] != "cpu" or rt.backend == "jax"
    r = _fit_rates(rt, data, cfg, n_outputs, batch, fit_steps, base, jit=jit)
    out["precision"], out["xla"] = base, jit
    out.update({k: r[k] for k in ("step_img_s", "fit_img_s", "input_efficiency", "input_wait_share",
                                  "input_efficiency_rounds")})
    out["gflops_per_image_forward"] = r["flops_per_image"] / 1e9
    out["utilisation_assumed"] = list(UTILISATION)
    out["needed_img_s"] = needed_rates(r["flops_per_image"])
    out["host_feed_over_needed_high"] = {k: round(out["host_feed_img_s"] / v[1], 2)
                                         for k, v in out["needed_img_s"].items()}
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in str(acc["name"])), None)
    achieved = 3 * r["flops_per_image"] * r["step_img_s"] / 1e12
    out["achieved_tflops"] = achieved
    if peak:
        out["model_flop_utilisation"] = achieved / peak
    if acc["kind"] == "gpu" and compare_float32 and base != "float32":
        f32 = _fit_rates(rt, data, cfg, n_outputs, batch, fit_steps, "float32", jit=rt.backend == "jax")
        out["float32_step_img_s"] = f32["step_img_s"]
        out["speedup_over_float32"] = r["step_img_s"] / f32["step_img_s"]
    return _rounded(out)


def _rounded(v):
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    if isinstance(v, float) and math.isfinite(v):
        return round(v, 4 if abs(v) < 10 else 1)
    return v


def bench_tag(run: str | os.PathLike, paths: list[str | os.PathLike], batch_size: int = 32,
              repeats: int = 3) -> dict[str, Any]:
    """Images per second of Keras and of ONNX Runtime on the same files, measured in one run."""

    import onnxruntime as ort

    from animetag.tagging.export import export_run

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
