"""Export a run for the tagger ecosystem: ONNX (dynamic batch) or a TensorFlow SavedModel,
with `selected_tags.csv` in the WD taggers' column order and a README stating the input
convention."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import write_json_atomic

README = """# {name}

A multi-label Danbooru tagger exported by animetag ({fmt}).

- `{model_file}`: the model. Input: one batch of images, shape `[batch, {size}, {size}, 3]`,
  float32, channel order **{order}**, values **0-255** (no normalisation: the model rescales
  inside). Each image is converted to RGB (transparency onto white), padded to a square with
  white (255, 255, 255), centred, then resized to {size}x{size} (Lanczos). The batch size is
  free.
- Output: `[batch, {n_tags}]` float32 sigmoid scores, one per row of `selected_tags.csv`.
- `selected_tags.csv`: `tag_id,name,category,count`, the WD taggers' column order;
  category 0 is general, 4 character (Danbooru ids). This model has no rating outputs
  (no category-9 rows).
- `thresholds.json` (when the run was evaluated): a global threshold and one per tag,
  tuned on validation data.

Channel order {order}{order_note}.
"""


def _with_channel_order(model, order: str):
    """The model behind a channel flip, so a BGR-fed tool gets the RGB the model learnt on."""
    if order == "rgb":
        return model
    import keras

    inp = keras.Input(model.input_shape[1:], name="image")
    flipped = keras.ops.flip(inp, axis=-1)
    return keras.Model(inp, model(flipped), name=f"{model.name}_bgr")


def export_run(run: str | os.PathLike, out: str | os.PathLike, fmt: str = "onnx", channel_order: str = "bgr",
               overwrite: bool = False) -> dict[str, Any]:
    """Write the export folder `out`; returns a summary (files and sizes)."""
    import keras

    from . import losses  # noqa: F401  (registers the custom loss)

    run, out = Path(run), Path(out)
    if fmt not in ("onnx", "savedmodel"):
        raise ValueError(f"format: {fmt!r} is not one of onnx, savedmodel")
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel order: {channel_order!r} is not rgb or bgr")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        from .locks import refuse_removing_inputs

        refuse_removing_inputs(out, {"run folder": run})
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    from .model import float32_copy

    # float32 throughout, also for a model.keras saved in mixed precision by an older version
    base = float32_copy(keras.saving.load_model(run / "model.keras", compile=False))
    size = int(base.input_shape[1])
    model = _with_channel_order(base, channel_order)
    model(np.zeros((1, size, size, 3), np.float32))  # an export needs a model that has been called
    model_file = "model.onnx" if fmt == "onnx" else "saved_model"
    model.export(str(tmp / model_file), format="onnx" if fmt == "onnx" else "tf_saved_model", verbose=False)
    tags = pd.read_csv(run / "tags.csv", keep_default_na=False)
    tags[["tag_id", "name", "category", "count"]].to_csv(tmp / "selected_tags.csv", index=False)
    if (run / "thresholds.json").exists():
        shutil.copyfile(run / "thresholds.json", tmp / "thresholds.json")
    note = (": the order the WD taggers' ONNX models take, so tools written for them "
            "(which flip RGB to BGR) feed it correctly" if channel_order == "bgr" else
            ": feed images as decoded, without the BGR flip WD tools apply")
    (tmp / "README.md").write_text(README.format(
        name=run.name, fmt=fmt, model_file=model_file, size=size, order=channel_order.upper(),
        n_tags=len(tags), order_note=note), encoding="utf-8")
    write_json_atomic(tmp / "export.json", {"format": fmt, "image_size": size, "channel_order": channel_order,
                                            "value_range": [0, 255], "layout": "NHWC", "n_tags": len(tags)})
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    size_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"out": str(out), "format": fmt, "model": str(out / model_file), "size_mb": round(size_bytes / 1e6, 2),
            "params": int(base.count_params())}
