import numpy as np
import pytest

keras = pytest.importorskip("keras")

from animetag.config import ModelConfig, TrainConfig, train_config  # noqa: E402
from animetag.model.architecture import ResNetSettings, build_model, se_block  # noqa: E402
from animetag.model.losses import AsymmetricLoss, make_loss  # noqa: E402


def test_se_block_rescales_channels_with_expected_weights():
    inp = keras.Input((8, 8, 32))
    model = keras.Model(inp, se_block(inp, ratio=4, name="se"))
    # Dense 32->8 and 8->32, with biases
    assert model.count_params() == (32 * 8 + 8) + (8 * 32 + 32)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 32)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == x.shape
    # the output is the input scaled per channel by a factor in (0, 1)
    scale = y / np.where(np.abs(x) > 1e-6, x, 1)
    per_channel = scale[:, 0, 0, :]
    assert np.allclose(scale, per_channel[:, None, None, :], atol=1e-4)
    assert ((per_channel > 0) & (per_channel < 1)).all()


def test_full_model_is_the_thesis_size_and_sample_is_slim():
    full = build_model(100, 256, ModelConfig())
    assert abs(full.count_params() - 17_000_000) / 17_000_000 < 0.10
    assert full.output_shape == (None, 100)
    assert full.layers[-1].dtype_policy.compute_dtype == "float32"
    slim = build_model(100, 64, train_config("sample").model)
    assert slim.count_params() < 1_000_000
    se_layers = [layer for layer in full.layers if layer.name.endswith("_se_scale")]
    assert len(se_layers) == sum(ResNetSettings().depths)  # every block carries an SE block


def test_compiled_model_round_trips_with_its_custom_loss(tmp_path):
    """A checkpoint (compiled, with a custom loss) reloads in-package; the portable model.keras
    is checked in a fresh process in test_precision.py."""
    cfg = train_config("sample", loss="asl")
    from animetag.model.keras_metrics import training_metrics

    m = build_model(5, 32, cfg.model)
    m.compile(optimizer="adam", loss=make_loss(cfg), metrics=training_metrics(5))
    x = np.random.default_rng(1).uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
    m.save(tmp_path / "m.keras")
    m2 = keras.saving.load_model(tmp_path / "m.keras")
    assert np.allclose(m.predict(x, verbose=0), m2.predict(x, verbose=0), atol=1e-6)
    assert isinstance(m2.loss, AsymmetricLoss)


Y = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], dtype="float32")
P = np.array([[0.9, 0.2, 0.4, 0.01], [0.3, 0.6, 0.99, 0.5]], dtype="float32")


def _focal(y, p, alpha, gamma):
    p_t = np.where(y == 1, p, 1 - p)
    a_t = np.where(y == 1, alpha, 1 - alpha)
    return float(np.mean(-a_t * (1 - p_t) ** gamma * np.log(p_t)))


def _asl(y, p, gn, gp, clip):
    pm = np.maximum(p - clip, 0)
    lp = y * (1 - p) ** gp * np.log(p)
    ln = (1 - y) * pm ** gn * np.log(1 - pm)
    return float(np.mean(-(lp + ln)))


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.0)])
def test_focal_loss_matches_formula(alpha, gamma):
    loss = make_loss(TrainConfig(loss="focal", loss_settings={"alpha": alpha, "gamma": gamma}))
    assert float(loss(Y, P)) == pytest.approx(_focal(Y, P, alpha, gamma), rel=1e-4)


def test_bce_matches_formula():
    loss = make_loss(TrainConfig(loss="bce"))
    ref = float(np.mean(-(Y * np.log(P) + (1 - Y) * np.log(1 - P))))
    assert float(loss(Y, P)) == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("gn,gp,clip", [(4.0, 0.0, 0.05), (2.0, 1.0, 0.0), (1.0, 0.0, 0.3)])
def test_asymmetric_loss_matches_formula(gn, gp, clip):
    loss = make_loss(TrainConfig(loss="asl", loss_settings={"gamma_neg": gn, "gamma_pos": gp, "clip": clip}))
    assert float(loss(Y, P)) == pytest.approx(_asl(Y, P, gn, gp, clip), rel=1e-4)
    # an easy negative (p below the clip) contributes nothing
    easy = AsymmetricLoss(gn, gp, 0.05)
    assert float(easy(np.zeros((1, 1)), np.full((1, 1), 0.04))) == pytest.approx(0.0, abs=1e-7)


def test_precision_choice_follows_the_accelerator():
    from animetag.training.fit import choose_precision, choose_xla

    assert choose_precision("auto", {"kind": "gpu", "compute_capability": (7, 5)}) == "mixed_float16"
    assert choose_precision("auto", {"kind": "gpu", "compute_capability": (9, 0)}) == "mixed_bfloat16"
    assert choose_precision("auto", {"kind": "gpu", "compute_capability": (6, 0)}) == "float32"
    assert choose_precision("auto", {"kind": "tpu"}) == "mixed_bfloat16"
    assert choose_precision("auto", {"kind": "cpu"}) == "float32"
    assert choose_precision("mixed_float16", {"kind": "cpu"}) == "mixed_float16"
    assert choose_xla("auto", {"kind": "cpu"}) is False and choose_xla("auto", {"kind": "gpu"}) is True
    # several GPUs: Keras cannot compile a step whose variables live on several devices
    assert choose_xla("auto", {"kind": "gpu"}, replicas=2) is False
    with pytest.raises(ValueError, match="2 replicas"):
        choose_xla("on", {"kind": "gpu"}, replicas=2)
    assert choose_xla("auto", {"kind": "tpu"}, replicas=8) is False  # the TPU compiles every step itself


@pytest.mark.slow
def test_weight_decay_spares_norms_and_biases_after_a_reload(tmp_path):
    from animetag.model.optimizer import AdamW

    m = build_model(3, 32, train_config("sample").model)
    m.compile(optimizer=AdamW(learning_rate=1e-3, weight_decay=0.1), loss="binary_crossentropy")
    x, y = np.zeros((2, 32, 32, 3), "float32"), np.zeros((2, 3), "float32")
    m.train_on_batch(x, y)
    m.save(tmp_path / "m.keras")
    opt = keras.saving.load_model(tmp_path / "m.keras").optimizer
    assert isinstance(opt, AdamW)
    decayed = {v.path.split("/")[-1] for v in m.trainable_variables if opt._use_weight_decay(v)}
    assert decayed == {"kernel"}  # gamma, beta and bias are left alone


def test_tpu_vm_is_found_with_tpu_local_and_never_probed_elsewhere(monkeypatch):
    import glob

    import tensorflow as tf

    import animetag.training.runtime as devices
    from animetag.training.fit import steps_per_execution

    calls = []

    class FakeResolver:  # as on a TPU VM: only tpu="local" finds the chips
        def __init__(self, tpu=None):
            calls.append(tpu)
            if tpu != "local":
                raise ValueError("Please provide a TPU Name to connect to.")

        def master(self):
            return "local"

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver)
    for var in ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(glob, "glob", lambda p: [])
    assert devices.accelerator()["kind"] == "cpu" and calls == []  # no sign of a TPU: never asked
    monkeypatch.setattr(glob, "glob", lambda p: ["/dev/accel0"] if p.startswith("/dev/accel") else [])
    acc = devices.accelerator()
    assert acc["kind"] == "tpu" and calls == ["local"]
    assert acc["count"] is None  # no fixed 8: the strategy reports the cores it finds
    assert steps_per_execution(acc) > 1 and steps_per_execution({"kind": "gpu"}) == 1
    # a TPU node named by the environment, where the bare resolver fails: not a TPU
    calls.clear()
    monkeypatch.setattr(glob, "glob", lambda p: [])
    monkeypatch.setenv("TPU_NAME", "my-node")
    assert devices.accelerator()["kind"] == "cpu" and calls == [None]


def test_rating_head_loss_is_the_tag_loss_plus_weighted_cross_entropy_and_skips_unrated(tmp_path):
    from animetag.model.losses import WithRating

    cfg = TrainConfig(loss="focal", rating_loss_weight=0.3)
    loss = make_loss(cfg, n_ratings=4)
    rating_true = np.array([[0, 1, 0, 0], [0, 0, 0, 0]], dtype="float32")  # the second post has no rating
    rating_pred = np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]], dtype="float32")
    y, p = np.hstack([rating_true, Y]), np.hstack([rating_pred, P])
    per_image_focal = [_focal(Y[i], P[i], 0.25, 2.0) for i in range(2)]
    want = np.mean([per_image_focal[0] + 0.3 * -np.log(0.6), per_image_focal[1]])
    assert float(loss(y, p)) == pytest.approx(want, rel=1e-4)
    # the rating of an unrated post does not matter; a rated one does
    p2 = p.copy()
    p2[1, :4] = [0.1, 0.1, 0.1, 0.7]
    assert float(loss(y, p2)) == pytest.approx(float(loss(y, p)), rel=1e-6)
    p2[0, :4] = [0.7, 0.1, 0.1, 0.1]
    assert float(loss(y, p2)) > float(loss(y, p)) + 0.1
    # and it round-trips through Keras' serialisation, as the checkpoint needs
    back = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(back, WithRating) and float(back(y, p)) == pytest.approx(float(loss(y, p)), rel=1e-6)


@pytest.mark.slow
def test_rating_head_model_outputs_ratings_then_tags_and_trains(tmp_path):
    from animetag.training.compile import compile_model

    keras.utils.set_random_seed(0)
    cfg = train_config("sample", epochs=8)
    m = build_model(6, 32, cfg.model, n_ratings=4)
    x = np.random.default_rng(2).uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    out = m.predict(x, verbose=0)
    assert out.shape == (8, 10) and np.allclose(out[:, :4].sum(1), 1.0, atol=1e-5)
    compile_model(m, cfg, 6, steps_per_epoch=2, jit=False, n_ratings=4)
    y = np.zeros((8, 10), "float32")
    y[np.arange(8), np.arange(8) % 4] = 1  # ratings
    y[:, 4] = 1
    h = m.fit(x, y, epochs=8, batch_size=4, verbose=0).history
    assert h["loss"][-1] < 0.7 * h["loss"][0], h["loss"]  # it learns the eight images
    assert 0.0 <= h["rating_accuracy"][-1] <= 1.0 and "f1_micro" in h
    m.save(tmp_path / "m.keras")  # with its compiled loss and metrics
    m2 = keras.saving.load_model(tmp_path / "m.keras")
    assert np.allclose(m.predict(x, verbose=0), m2.predict(x, verbose=0), atol=1e-6)


def test_rating_accuracy_and_tag_f1_skip_the_other_columns():
    from animetag.model.keras_metrics import RatingAccuracy, TagF1Score

    y = np.array([[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1], [0, 0, 1, 0, 0, 0]], "float32")
    p = np.array([[.7, .1, .1, .1, .9, .1], [.6, .2, .1, .1, .2, .8], [.9, .0, .0, .1, .9, .9],
                  [.1, .1, .7, .1, .6, .1]], "float32")
    acc = RatingAccuracy(4)
    acc.update_state(y, p, sample_weight=np.array([1, 1, 1, 0], "float32"))  # the last is padding
    assert float(acc.result()) == pytest.approx(0.5)  # rated and real: rows 0 (hit) and 1 (miss)
    f1 = TagF1Score(4, average="micro", threshold=0.5)
    f1.update_state(y, p)
    tp, fp, fn = 4, 1, 0
    assert float(f1.result()) == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-5)


@pytest.mark.parametrize("probe", [True, False])
def test_rating_probe_leaves_the_tag_gradients_as_without_a_rating_head(probe):
    """With the probe (the default in training) the rating loss reaches the rating head only:
    every other weight gets exactly the tag loss's gradient. Trained jointly, it does not."""
    import tensorflow as tf

    cfg = train_config("sample")
    keras.utils.set_random_seed(0)
    m = build_model(5, 32, cfg.model, n_ratings=4, rating_probe=probe)
    x = np.random.default_rng(3).uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    y = np.zeros((4, 9), "float32")
    y[np.arange(4), [0, 1, 2, 3]] = 1
    y[:, 5] = 1
    both, tags_only = make_loss(cfg, n_ratings=4), make_loss(cfg)
    shared = [v for v in m.trainable_variables if not v.path.startswith("rating")]

    def grads(fn):
        with tf.GradientTape() as tape:
            p = m(x, training=False)
            loss = fn(p)
        return tape.gradient(loss, shared)

    g_both = grads(lambda p: both(y, p))
    g_tags = grads(lambda p: tags_only(y[:, 4:], p[:, 4:]))
    same = all(np.allclose(a, b, atol=1e-7) for a, b in zip(g_both, g_tags))
    assert same == probe


def test_stage_table_accounts_for_every_parameter():
    from animetag.model.architecture import stage_table

    m = build_model(7, 32, train_config("sample").model, n_ratings=4)
    t = stage_table(m)
    params = [int(v.replace(",", "")) for v in t["params"]]
    assert list(t.index) == ["stem", "stage1", "stage2", "stage3", "stage4",
                             "heads (pool, dropout, rating, tags)", "total"]
    assert sum(params[:-1]) == params[-1] == m.count_params()
    assert t.loc["heads (pool, dropout, rating, tags)", "output"] == "11"  # 4 ratings + 7 tags
    assert t.loc["stage4", "output"] == "1x1x192"
