"""Every precision and compile path, at tiny sizes on the CPU: float32, mixed float16 and mixed
bfloat16, each with XLA on and off. Each trains with a finite loss (every precision, and XLA
once, interrupted after its first epoch and resumed) and saves a model.keras that loads in a
process that never imports animetag; each precision exports to a float32 ONNX model that
agrees with it (XLA changes how a step is compiled, not what model.keras holds)."""

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # trains and exports (minutes)

keras = pytest.importorskip("keras")

PATHS = [(p, x) for p in ("float32", "mixed_float16", "mixed_bfloat16") for x in ("off", "on")]
# the paths stopped after their first epoch and resumed: every precision (its optimizer and
# loss-scale state come back), and XLA once (a checkpoint compiled with XLA reloads and goes on).
# XLA changes how a step is compiled, not what a checkpoint holds; an XLA build costs half a
# minute on two cores, so the mixed XLA paths train their two epochs in one go.
RESUMED = {("float32", "off"), ("mixed_float16", "off"), ("mixed_bfloat16", "off"), ("float32", "on")}
# how far the model computed in each precision may lie from its float32 copy (scores in 0-1)
MIXED_TOLERANCE = {"float32": 1e-5, "mixed_float16": 5e-3, "mixed_bfloat16": 4e-2}


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt("simulated disconnect")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import write_subset

    root = tmp_path_factory.mktemp("precision")
    return write_subset(root / "data", {"train": 48, "val": 16, "test": 8}, image_size=32)


@pytest.fixture(params=PATHS, ids=[f"{p}-{x}" for p, x in PATHS])
def path_run(request, data, tmp_path):
    """One path's run: interrupted after its first epoch, then resumed with the same call (the
    paths in RESUMED), or trained its two epochs in one go."""
    from animetag.training.fit import train

    precision, xla = request.param
    run = tmp_path / f"{precision}-xla-{xla}"
    kw = dict(profile="tiny", image_size=32, epochs=2, batch_size=16, precision=precision, xla=xla, verbose=0)
    if (precision, xla) in RESUMED:
        with pytest.raises(KeyboardInterrupt):
            train(data, run, callbacks=[_Interrupt()], **kw)
        first = pd.read_csv(run / "history.csv")
    result = train(data, run, **kw)
    if (precision, xla) not in RESUMED:
        first = pd.read_csv(run / "history.csv").iloc[:1]
    x = np.random.default_rng(7).integers(0, 256, size=(6, 32, 32, 3)).astype("float32")
    return {"precision": precision, "xla": xla, "run": run, "first_epoch": first, "result": result, "x": x,
            "root": tmp_path}


def test_each_path_trains_finite_resumes_and_gives_a_portable_float32_model(path_run, keras_alone):
    """Per path: the resume, the model.keras Keras alone loads (float32 weights, no optimizer,
    the same scores), its distance from the training precision, and (XLA off) a float32 ONNX
    export that agrees with it."""
    r = path_run
    precision, xla = r["precision"], r["xla"]
    assert len(r["first_epoch"]) == 1 and np.isfinite(r["first_epoch"]["loss"]).all()
    res = r["result"]
    assert res["resumed_from_epoch"] == (1 if (precision, xla) in RESUMED else 0) and res["epochs_done"] == 2
    assert res["precision"] == precision and res["xla"] == (xla == "on")
    hist = pd.read_csv(r["run"] / "history.csv")
    assert hist["epoch"].tolist() == [0, 1] and np.isfinite(hist[["loss", "val_loss"]].to_numpy()).all()
    cfg = json.loads((r["run"] / "config.json").read_text())
    assert cfg["runtime"]["precision"] == precision
    _loads_with_keras_alone(r, keras_alone)
    if xla == "off":
        _exports_a_float32_onnx_model_that_agrees(r)


def _loads_with_keras_alone(r, keras_alone):
    from animetag.model.architecture import with_dtype_policy

    x = r["x"]
    alone = keras_alone.load(r["run"] / "model.keras", x)
    assert "error" not in alone, alone["error"]
    assert not alone["optimizer"], "model.keras carries an optimizer"
    assert alone["dtypes"] == ["float32"], alone["dtypes"]
    m = keras.saving.load_model(r["run"] / "model.keras")
    here = np.asarray(m(x, training=False))
    np.testing.assert_allclose(alone["scores"], here, atol=1e-6)
    # the float32 file against the same weights computed in the training precision
    mixed = np.asarray(with_dtype_policy(m, r["precision"])(x, training=False), dtype=np.float32)
    gap = float(np.abs(mixed - here).max())
    print(f"{r['precision']}: training precision vs the float32 model.keras, largest score difference {gap:.2e}")
    assert gap <= MIXED_TOLERANCE[r["precision"]], gap


def _exports_a_float32_onnx_model_that_agrees(r):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from animetag.tagging.export import export_run

    e = export_run(r["run"], r["root"] / "export", "onnx", channel_order="rgb")
    graph = onnx.load(e["model"]).graph
    assert {t.data_type for t in graph.initializer if t.data_type in
            (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)} <= {onnx.TensorProto.FLOAT}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    sess = ort.InferenceSession(e["model"], providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: r["x"]})[0]
    want = np.asarray(keras.saving.load_model(r["run"] / "model.keras")(r["x"], training=False))
    assert (got[:, want.shape[1]:] == 0).all()  # the character placeholder of a model without characters
    worst = float(np.abs(got[:, : want.shape[1]] - want).max())
    print(f"ONNX vs model.keras, largest score difference {worst:.2e}")
    assert worst < 1e-5, worst
