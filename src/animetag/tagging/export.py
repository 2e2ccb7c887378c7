"""Export a run for the tagger ecosystem: ONNX (dynamic batch; scores first, the pooled
embedding second; thresholds in its metadata) or a TensorFlow SavedModel, with
`selected_tags.csv` in the WD taggers' row and column order and a README stating the
preprocessing exactly."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from animetag.data.images import resize_matrix
from animetag.folders import EXPORT_INFO, RunFolder, refuse_overwriting_another_kind, write_json_atomic
from animetag.locks import refuse_removing_inputs
from animetag.model import policies
from animetag.model.architecture import EMBEDDING, float32_copy
from animetag.vocab import category_name, n_ratings

MAX_INPUT_SIZE = 4096  # the side of an export's input square at most (a 4096 x 4096 image is 0.2 GB of float32)

README = """# {name}

A multi-label Danbooru tagger exported by animetag ({fmt}), laid out as the WD taggers are
(`model.onnx` + `selected_tags.csv`).

## Clients: how each was checked, and what agrees

"Agrees" means the same tags as `animetag tag` on the same image at the same thresholds.
Where a client disagrees, it is its own preprocessing (its resize filter, no EXIF
orientation, transparency onto another colour), not the model.

- **dghs-imgutils** (`get_wd14_tags` with this folder as a local model): run by animetag's
  tests on every change: its tags equal `animetag tag`'s on the test images. By hand on 40
  varied images (EXIF-rotated photos, transparent PNGs): 36 of 40.
- **SmilingWolf's WD tagger app**: loaded by hand: 40 of 40.
- **wd14-tagger-standalone** (corkborg): loaded by hand: 32 of 40.
- **ComfyUI-WD14-Tagger**: loaded by hand: 16 of 40 (its own resizing differs most); it
  needs a character row, which this export always has.
- **the WebUI tagger extension**: loaded and run by hand; agreement not counted.
- **kohya's `tag_images_by_wd14_tagger.py`** (sd-scripts): feeds 448 x 448 whatever the model
  says, so export with `--input-size 448` for it. A test feeds such an export as that script
  does (white padding, OpenCV's area filter) and holds its scores within 0.05 of
  `animetag tag`'s. By hand with the real script and characters off: 38 of 40. Its versions
  since January 2026 stop with `UnboundLocalError` (`character_tags`) at the first image
  with a character tag: its own bug. Pass `--character_threshold 1.01` (above 1: no
  character is ever kept) to avoid it, or use an older version.

## Input

`{model_file}`: one batch of images, shape `[batch, {size}, {size}, 3]`, float32, channel
order **{order}**, values **0-255** (no normalisation: the model rescales inside). The batch
size is free. Prepare each image as `animetag tag` does:

1. decoded at full size (no reduced-size JPEG decoding), first frame, EXIF orientation applied;
2. converted to RGB, transparent pixels composited onto white;
3. padded to a square with white (255, 255, 255), the image centred
   (offset `(side - width) // 2`, `(side - height) // 2`);
4. resized once, the whole square to {size}x{size} for this file, with Pillow's bicubic
   filter (`Image.BICUBIC`); `animetag tag` itself resizes to {train}x{train}, the size the
   model was trained at, and feeds the Keras model;
5. {order_step}.
{resize_note}
This is the WD taggers' own preprocessing; the only differences are EXIF orientation (step 1),
and an image so long and thin that its white square would exceed 64M pixels, which is
resized before it is padded. Training read the same squares as stored in the subset's
shards, saved as JPEG at quality 95 after step 4: so a score here can differ slightly from
what the model saw in training (by up to about 0.03 on real JPEGs).

## Outputs

1. `scores`, `[batch, {n_rows}]` float32, one per row of `selected_tags.csv`, in its order:
   {outputs_text}
2. `embedding`, `[batch, {n_embed}]` float32: the pooled features before the classifier
   (for similarity search; normalise to unit length first).

## Files

- `selected_tags.csv`: `tag_id,name,category,count,threshold`. The first four columns are
  the WD taggers' (category 9 rating, 0 general, 4 character); `count` is the number of
  the training subset's kept posts with the tag (or rating). `threshold` is the tuned
  threshold of each tag (blank for ratings: an image has the rating with the highest
  score){threshold_note}.
- `thresholds.json`: the tuned thresholds (tuned on validation images, never on test):
  `global` (best F1-micro), `precision_equals_recall` (the WD taggers' policy) and one per tag.
  The same JSON is in the ONNX model's metadata under `thresholds`.
- `export.json`: input size, layout, channel order, value range, outputs.

Channel order {order}{order_note}.
"""

RESIZE_NOTE = """
This export takes {feed}x{feed} squares and resizes them to the {size}x{size} the model was
trained at inside the graph, with Pillow's bicubic filter (as two matrix products, rounded
as Pillow rounds). A tool that resizes to {feed} itself (kohya's script: white padding,
OpenCV's area filter) therefore resizes twice; its scores agree with `animetag tag` on the
same images within 0.05 (the bound the project's test holds it to; 0.001 measured there, on
a small untrained model: a trained one is more sensitive).
"""


def _with_channel_order(model, order: str):
    """The model behind a channel flip, so a BGR-fed tool gets the RGB the model learnt on."""
    if order == "rgb":
        return model
    import keras

    inp = keras.Input(model.input_shape[1:], name="image")
    flipped = keras.ops.flip(inp, axis=-1)
    return keras.Model(inp, model(flipped), name=f"{model.name}_bgr")


def _with_input_size(model, n: int):
    """The model behind a resize from n x n to its own size, in the graph: Pillow's bicubic
    filter as two matrix products (the width first, each pass clipped and rounded to whole
    levels as Pillow does), so a tool with a fixed input size (kohya's 448) can feed it."""
    import keras

    size = int(model.input_shape[1])
    if n == size:
        return model
    w = resize_matrix(n, size).astype("float32")

    def resize(x):
        x = keras.ops.einsum("bhwc,vw->bhvc", x, keras.ops.convert_to_tensor(w))
        x = keras.ops.round(keras.ops.clip(x, 0.0, 255.0))
        x = keras.ops.einsum("uh,bhvc->buvc", keras.ops.convert_to_tensor(w), x)
        return keras.ops.round(keras.ops.clip(x, 0.0, 255.0))

    inp = keras.Input((n, n, 3), name="image")
    return keras.Model(inp, model(keras.layers.Lambda(resize, name=f"resize_{n}_to_{size}")(inp)), name=model.name)


CHARACTER = 4
# A model without character outputs gets one character row, always scored 0: ComfyUI's WD14
# node reads the rows from the first category-4 row on as characters, and without one it takes
# every row (ratings and general tags included) for a character.
PLACEHOLDER = pd.DataFrame({"tag_id": [-1], "name": ["no_character_outputs"], "category": [CHARACTER],
                            "count": [0]})


def _with_placeholder_character(model):
    import keras

    inp = keras.Input(model.input_shape[1:], name="image")
    scores, embedding = model(inp)
    zero = keras.layers.Lambda(lambda s: keras.ops.zeros_like(s[:, :1]), name="no_character_outputs")(scores)
    return keras.Model(inp, [keras.layers.Concatenate(name="scores")([scores, zero]), embedding], name=model.name)


def _outputs_text(n_rat: int, rows: pd.DataFrame) -> str:
    real = rows.iloc[n_rat:]
    real = real[real["name"] != PLACEHOLDER["name"][0]]
    cats = real["category"].map(category_name).value_counts()
    tags = ", ".join(f"{n} {c}" for c, n in cats.items())
    note = (" The last row, `no_character_outputs` (category 4), is a placeholder scored 0: this model "
            "predicts no characters, and ComfyUI's WD14 node needs a character row to tell general tags "
            "from characters." if len(real) < len(rows) - n_rat else "")
    if n_rat:
        return (f"the {n_rat} ratings first (softmax: they sum to 1; an image's rating is the highest), "
                f"then the tags ({tags}), each an independent sigmoid score.{note}")
    return f"the tags ({tags}), each an independent sigmoid score; this model has no rating outputs.{note}"


def _name_outputs_and_add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Name the ONNX outputs `scores` and `embedding` and store `metadata` in the model."""
    import onnx

    m = onnx.load(str(path))
    renames = dict(zip([o.name for o in m.graph.output], ("scores", "embedding")))
    for node in m.graph.node:
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    for o in m.graph.output:
        o.name = renames.get(o.name, o.name)
    del m.metadata_props[:]
    for k, v in metadata.items():
        m.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


class ExportNeedsTensorFlow(RuntimeError):
    """Exporting was asked for under a Keras backend other than TensorFlow."""


def export_unavailable() -> str | None:
    """Why this process cannot export (one line), or None where it can. Keras writes ONNX
    through tf2onnx and a SavedModel through TensorFlow; under JAX it would go through
    jax2onnx, whose graph of this model ONNX Runtime rejects (its MaxPool: "Unsupported
    pooling size"), so exports are made under TensorFlow only."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return None
    how = ("start Python with KERAS_BACKEND=tensorflow (TensorFlow is installed here)"
           if importlib.util.find_spec("tensorflow") is not None else
           "install TensorFlow, or export on a runtime that has it (Colab's CPU and GPU runtimes): "
           "the run folder moves there unchanged")
    return f"exporting needs Keras on TensorFlow, and this process runs Keras on {backend}: {how}"


def export_run(run: str | os.PathLike, out: str | os.PathLike, fmt: str = "onnx", channel_order: str = "bgr",
               overwrite: bool = False, input_size: int | None = None) -> dict[str, Any]:
    """Write the export folder `out`; returns a summary (files and sizes). `input_size`: the
    side the exported model takes (default: the training size), resized inside the graph."""

    from animetag.model import losses  # noqa: F401  (registers the custom loss)

    run, out = Path(run), Path(out)
    if fmt not in ("onnx", "savedmodel"):
        raise ValueError(f"format: {fmt!r} is not one of onnx, savedmodel")
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel order: {channel_order!r} is not rgb or bgr")
    if input_size is not None and not 8 <= input_size <= MAX_INPUT_SIZE:
        raise ValueError(f"input size: {input_size} is not within 8 to {MAX_INPUT_SIZE} (the WD taggers take 448, "
                         f"Camie 512; one {input_size} x {input_size} image would be "
                         f"{input_size * input_size * 12 / 1e9:.1f} GB of float32 input)")
    if why := export_unavailable():
        raise ExportNeedsTensorFlow(why)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")

        refuse_removing_inputs(out, {"run folder": run}, inside_ok=True)  # RUN/onnx may be replaced
        refuse_overwriting_another_kind(out, "export")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        return _export(RunFolder.of(run), out, tmp, fmt, channel_order, input_size)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves nothing half-written
        raise


def _export(run: RunFolder, out: Path, tmp: Path, fmt: str, channel_order: str,
            input_size: int | None) -> dict[str, Any]:
    import keras

    # float32 throughout, also for a model.keras saved in mixed precision by an older version
    base = float32_copy(run.model)
    size = int(base.input_shape[1])
    embedding = base.get_layer(EMBEDDING).output
    two = keras.Model(base.inputs, [base.outputs[0], embedding], name=base.name)
    rows = run.tags
    if not (rows["category"] == CHARACTER).any():
        two, rows = _with_placeholder_character(two), pd.concat([rows, PLACEHOLDER], ignore_index=True)
    feed = input_size or size
    model = _with_channel_order(_with_input_size(two, feed), channel_order)
    model(np.zeros((1, feed, feed, 3), np.float32))  # an export needs a model that has been called
    model_file = "model.onnx" if fmt == "onnx" else "saved_model"
    model.export(str(tmp / model_file), format="onnx" if fmt == "onnx" else "tf_saved_model", verbose=False)
    n_rat = n_ratings(rows)
    thresholds = run.thresholds()
    table = rows[["tag_id", "name", "category", "count"]].copy()
    if thresholds:  # the tagger's default policy, none for the rating rows and the placeholder
        tuned = policies.get(policies.DEFAULT_TAGGING).for_tags(thresholds, table["name"].tolist())
        table["threshold"] = [None if i < n_rat or c == -1 else float(t)
                              for i, (t, c) in enumerate(zip(tuned, table["tag_id"]))]
        table.to_csv(tmp / "selected_tags.csv", index=False, float_format="%.4g")
        shutil.copyfile(run / run.THRESHOLDS, tmp / run.THRESHOLDS)
    else:
        table.to_csv(tmp / "selected_tags.csv", index=False)
    n_embed = int(embedding.shape[-1])
    info = {"format": fmt, "image_size": feed, "model_image_size": size, "channel_order": channel_order,
            "value_range": [0, 255],
            "layout": "NHWC", "n_outputs": len(rows), "n_ratings": n_rat, "n_tags": int((rows["tag_id"].iloc[n_rat:] != -1).sum()),
            "outputs": {"scores": len(rows), "embedding": n_embed},
            "preprocessing": "RGB (transparency onto white), pad to a white square (centred), one bicubic resize"}
    if fmt == "onnx":
        _name_outputs_and_add_metadata(tmp / model_file, {
            **{k: json.dumps(v) if not isinstance(v, str) else v for k, v in info.items()},
            **({"thresholds": json.dumps(thresholds)} if thresholds else {})})
    note = (": the order the WD taggers' ONNX models take, so tools written for them "
            "(which flip RGB to BGR) feed it correctly" if channel_order == "bgr" else
            ": feed images as decoded, without the BGR flip WD tools apply")
    (tmp / "README.md").write_text(README.format(
        name=run.path.name, fmt=fmt, model_file=model_file, size=feed, train=size, order=channel_order.upper(),
        resize_note=RESIZE_NOTE.format(feed=feed, size=size) if feed != size else "",
        order_step=("flipped to BGR channel order and fed as float32" if channel_order == "bgr"
                    else "fed in RGB channel order as float32"),
        n_rows=len(rows), n_embed=n_embed, outputs_text=_outputs_text(n_rat, rows),
        threshold_note="" if thresholds else " (this run was not evaluated: the column is absent)",
        order_note=note), encoding="utf-8")
    write_json_atomic(tmp / EXPORT_INFO, info)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    size_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"out": str(out), "format": fmt, "model": str(out / model_file), "size_mb": round(size_bytes / 1e6, 2),
            "params": int(base.count_params())}
