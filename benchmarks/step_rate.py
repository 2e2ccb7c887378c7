"""The training step of the thesis model on in-memory batches, under whichever Keras backend is
installed (TensorFlow, JAX or PyTorch): float32 against mixed precision, with the on-device
augmentation and without, side by side in one run; and the model FLOP utilisation.

With `--compare plugins`, what each registered backbone and loss costs instead: parameters,
the size of its model.keras, forward GFLOPs and the mixed-precision training step, each beside
the thesis ResNet-SE under focal loss, in one run.

It isolates the accelerator's side of training (no input pipeline), so it also runs where
TensorFlow is not installed, e.g. `KERAS_BACKEND=jax`. The project's own `animetag bench train`
measures the host feed and the fed step with TensorFlow.

    python benchmarks/step_rate.py --image-size 256 --batch-size 64 --steps 30
    python benchmarks/step_rate.py --compare plugins --image-size 256 --batch-size 64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from animetag.config import AugmentConfig, train_config  # noqa: E402
from animetag.evaluation.published import PEAK_TFLOPS  # noqa: E402
from animetag.model.architecture import build_model, float32_copy, flops_per_image  # noqa: E402
from animetag.registry import BACKBONES, LOSSES  # noqa: E402
from animetag.training.compile import compile_model, training_model, with_plugin_settings  # noqa: E402

NO_AUGMENT = AugmentConfig(flip=False, crop=0.0, brightness=0.0, contrast=0.0, saturation=0.0)


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


def step_rate(cfg, n_tags: int, batch: int, steps: int, precision: str, augment: bool, rounds: int = 3,
              keep: dict | None = None):
    """Median images per second of `rounds` timed epochs of `steps` training steps, the model's
    forward FLOPs and its last loss. `keep`, if given, receives the built core model."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        core = build_model(n_tags, cfg.image_size, cfg.model)
        if keep is not None:
            keep["core"] = core
        # the project's training model and compile step; without augmentation, the Augment
        # layer only casts the uint8 pixels
        model = training_model(core, cfg if augment else dataclasses.replace(cfg, augment=NO_AUGMENT))
        compile_model(model, cfg, n_tags, steps_per_epoch=steps, jit=True)
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


def saved_megabytes(core) -> float:
    """The size of the portable model.keras (float32) this model would be saved as."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        float32_copy(core).save(path)
        return round(path.stat().st_size / 1e6, 1)


def variant(cfg, kind: str, name: str):
    """The run's settings with another backbone or loss, each with its own settings (the
    run's ResNet layout kept for another ResNet, defaults otherwise)."""
    if kind == "loss":
        return with_plugin_settings(dataclasses.replace(cfg, loss=name, loss_settings={}))
    same = BACKBONES.entry(name).settings is BACKBONES.entry(cfg.model.backbone).settings
    model = dataclasses.replace(cfg.model, backbone=name, settings=cfg.model.settings if same else {})
    return with_plugin_settings(dataclasses.replace(cfg, model=model))


def compare_plugins(cfg, n_tags: int, batch: int, steps: int, precision: str) -> list[dict]:
    """Every registered backbone under the run's loss, then every other loss on the run's
    backbone: parameters, model.keras size, forward GFLOPs, training img/s (augmentation
    included) and each one's ratio to the first row (the run's own backbone and loss, timed
    first and again last)."""
    variants = [("backbone", b) for b in [cfg.model.backbone] + [b for b in BACKBONES.names()
                                                                   if b != cfg.model.backbone]]
    variants += [("loss", name) for name in LOSSES.names() if name != cfg.loss]
    rows = []
    for kind, name in variants:
        vcfg = variant(cfg, kind, name)
        keep: dict = {}
        rate, flops, loss = step_rate(vcfg, n_tags, batch, steps, precision, augment=True, keep=keep)
        core = keep["core"]
        rows.append({"plugin": f"{kind} {name}", "backbone": vcfg.model.backbone, "loss": vcfg.loss,
                     "params_m": round(core.count_params() / 1e6, 2), "model_mb": saved_megabytes(core),
                     "gflops_forward": round(flops / 1e9, 2), "img_s": round(rate, 1), "loss_value": round(loss, 4)})
        print(json.dumps(rows[-1]), flush=True)
    # the first row is measured again last: a GPU's first timed run can be slower (clocks,
    # autotuning), which would flatter every other row; the ratios use the mean of both
    rate, _, _ = step_rate(cfg, n_tags, batch, steps, precision, augment=True)
    base = rows[0]
    base["img_s_first_last"] = [base["img_s"], round(rate, 1)]
    base["img_s"] = round((base["img_s"] + rate) / 2, 1)
    for r in rows:
        r["img_s_ratio"] = round(r["img_s"] / base["img_s"], 2)
        r["params_ratio"] = round(r["params_m"] / base["params_m"], 2)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="full")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tags", type=int, default=100)
    p.add_argument("--steps", type=int, default=30, help="training steps per timed round")
    p.add_argument("--precision", default="mixed_bfloat16", help="the mixed policy to set beside float32")
    p.add_argument("--compare", choices=("precision", "plugins"), default="precision",
                   help="precision: float32 against --precision, with and without augmentation; "
                        "plugins: every backbone and loss at --precision, beside the thesis model")
    a = p.parse_args(argv)
    cfg = train_config(a.profile, image_size=a.image_size, batch_size=a.batch_size)
    name = device_name()
    out = {"backend": keras.backend.backend(), "keras": keras.__version__, "device": name,
           "image_size": a.image_size, "batch_size": a.batch_size}
    if a.compare == "plugins":
        out["precision"] = a.precision
        out["plugins"] = compare_plugins(cfg, a.tags, a.batch_size, a.steps, a.precision)
        print(json.dumps(out, indent=2))
        cols = ["plugin", "params_m", "model_mb", "gflops_forward", "img_s", "img_s_ratio"]
        print(f"{cols[0]:<26}" + "".join(f"{c:>16}" for c in cols[1:]))
        for r in out["plugins"]:
            print(f"{r[cols[0]]:<26}" + "".join(f"{r[c]!s:>16}" for c in cols[1:]))
        return 0
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
