"""The training step of the thesis model on in-memory batches, under whichever Keras backend is
installed (TensorFlow, JAX or PyTorch): float32 against mixed precision, with the on-device
augmentation and without, side by side in one run; and the model FLOP utilisation.

It isolates the accelerator's side of training (no input pipeline), so it also runs where
TensorFlow is not installed, e.g. `KERAS_BACKEND=jax`. The project's own `animetag bench train`
measures the host feed and the fed step with TensorFlow.

    python benchmarks/step_rate.py --image-size 256 --batch-size 64 --steps 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from animetag.augment import Augment  # noqa: E402
from animetag.config import train_config  # noqa: E402
from animetag.losses import make_loss  # noqa: E402
from animetag.metrics import keras_metrics  # noqa: E402
from animetag.model import build_model, flops_per_image  # noqa: E402
from animetag.optim import AdamW  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0}


def device_name() -> str:
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return jax.devices()[0].device_kind
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU"
    except Exception:  # noqa: BLE001  (a name only)
        return "unknown"


def step_rate(cfg, n_tags: int, batch: int, steps: int, precision: str, augment: bool, rounds: int = 3):
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        core = build_model(n_tags, cfg.image_size, cfg.model)
        inputs = keras.Input(core.input_shape[1:], dtype="uint8")
        x = Augment.from_settings(cfg.augment, seed=0)(inputs) if augment else keras.ops.cast(inputs, "float32")
        model = keras.Model(inputs, core(x))
        opt = AdamW(learning_rate=1e-4, weight_decay=cfg.weight_decay)
        model.compile(optimizer=opt, loss=make_loss(cfg), weighted_metrics=keras_metrics(n_tags), jit_compile=True)
        rng = np.random.default_rng(0)
        xb = rng.integers(0, 256, size=(batch * steps, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
        yb = (rng.uniform(size=(batch * steps, n_tags)) < 0.1).astype("float32")
        model.fit(xb[: batch * 2], yb[: batch * 2], batch_size=batch, epochs=1, verbose=0)  # compile
        rates = []
        for _ in range(rounds):
            t = time.perf_counter()
            h = model.fit(xb, yb, batch_size=batch, epochs=1, verbose=0, shuffle=False)
            rates.append(batch * steps / (time.perf_counter() - t))
        loss = float(h.history["loss"][-1])
        if not np.isfinite(loss):
            raise FloatingPointError(f"{precision}: the loss became {loss}")
        return float(np.median(rates)), flops_per_image(core), loss
    finally:
        keras.mixed_precision.set_global_policy(previous)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="full")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tags", type=int, default=100)
    p.add_argument("--steps", type=int, default=30, help="training steps per timed round")
    p.add_argument("--precision", default="mixed_bfloat16", help="the mixed policy to set beside float32")
    a = p.parse_args(argv)
    cfg = train_config(a.profile, image_size=a.image_size, batch_size=a.batch_size)
    name = device_name()
    out = {"backend": keras.backend.backend(), "keras": keras.__version__, "device": name,
           "image_size": a.image_size, "batch_size": a.batch_size}
    for precision in ("float32", a.precision):
        for augment in (False, True):
            rate, flops, loss = step_rate(cfg, a.tags, a.batch_size, a.steps, precision, augment)
            key = f"{precision}{'_augment' if augment else ''}"
            out[f"{key}_img_s"] = round(rate, 1)
            out[f"{key}_loss"] = round(loss, 4)
            print(json.dumps({key: round(rate, 1)}), flush=True)
    out["gflops_per_image_forward"] = round(flops / 1e9, 3)
    out["mixed_speedup_over_float32"] = round(out[f"{a.precision}_img_s"] / out["float32_img_s"], 2)
    out["augmentation_cost"] = round(1 - out[f"{a.precision}_augment_img_s"] / out[f"{a.precision}_img_s"], 3)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if peak:
        out["model_flop_utilisation"] = round(3 * flops * out[f"{a.precision}_augment_img_s"] / 1e12 / peak, 3)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
