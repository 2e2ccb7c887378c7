import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from animetag.config import SubsetConfig  # noqa: E402
from animetag.subset import build_subset, label_matrix, read_subset  # noqa: E402


@pytest.fixture(scope="module")
def learn_subset(tmp_path_factory):
    """800 clean sample posts at 32 px, top-30 tags: big enough to show learning quickly."""
    from animetag.sample import generate

    root = tmp_path_factory.mktemp("learn")
    generate(root / "sample", 800, seed=5, clean=True)
    out = root / "subset"
    build_subset(root / "sample" / "metadata" / "posts.json", root / "sample", out,
                 SubsetConfig(top_k=30, image_size=32, images_per_shard=128, workers=2), progress=False)
    return out


def test_pipeline_labels_match_the_manifest(subset_dir):
    from animetag.pipeline import make_dataset

    tags, manifest, _ = read_subset(subset_dir)
    ds = make_dataset(subset_dir, "train", 16, with_ids=True)
    ids, ys, xs = [], [], []
    for x, y, pid in ds:
        ids += pid.numpy().tolist()
        ys.append(y.numpy())
        xs.append(x.numpy())
    train = manifest[manifest["split"] == "train"].set_index("id")
    assert sorted(ids) == sorted(train.index)
    assert (np.concatenate(ys) == label_matrix(train.loc[ids].reset_index(), tags)).all()
    x = np.concatenate(xs)
    assert x.dtype == np.float32 and x.shape[1:] == (32, 32, 3) and x.max() > 200  # raw 0-255
    # evaluation reads in a fixed order and never augments; training does augment
    again = np.concatenate([b[0].numpy() for b in make_dataset(subset_dir, "train", 16)])
    assert np.array_equal(x, again)
    from animetag.config import AugmentConfig

    aug = make_dataset(subset_dir, "train", 16, training=True, augment=AugmentConfig(), with_ids=True)
    xa, _, ida = next(iter(aug))
    ref = {i: a for i, a in zip(ids, x)}
    diffs = [np.abs(ref[int(i)] - a).mean() for i, a in zip(ida.numpy(), xa.numpy())]
    assert np.mean(diffs) > 1.0


def test_short_training_learns_beyond_the_prior(learn_subset, tmp_path):
    from animetag.train import train

    r = train(learn_subset, tmp_path / "run", profile="sample", image_size=32, epochs=10, batch_size=32,
              verbose=0)
    print(json.dumps(r, indent=1))
    base = r["prior_baseline_val"]
    assert r["val_f1_micro"] > base["f1_micro"] + 0.05, (r["val_f1_micro"], base)
    assert r["val_f1_macro"] > base["f1_macro"] + 0.03, (r["val_f1_macro"], base)
    run = tmp_path / "run"
    hist = pd.read_csv(run / "history.csv")
    assert {"val_f1_micro", "val_f1_macro", "val_pr_auc", "loss"} <= set(hist.columns)
    assert hist["epoch"].tolist() == list(range(10))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["image_size"] == 32 and cfg["data"]["n_tags"] == 30
    # model.keras is the best epoch by validation F1-macro and loads with nothing else
    m = keras.saving.load_model(run / "model.keras")
    assert m.output_shape == (None, 30)
    assert r["best_epoch"] == int(hist["val_f1_macro"].idxmax()) + 1


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at:
            raise KeyboardInterrupt("simulated disconnect")


class _Iterations(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start = int(self.model.optimizer.iterations.numpy())


def test_resume_continues_from_the_last_finished_epoch(subset_dir, tmp_path):
    from animetag.train import SettingsChanged, train

    run = tmp_path / "run"
    kw = dict(profile="sample", image_size=32, epochs=3, batch_size=32, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(subset_dir, run, callbacks=[_Interrupt(2)], **kw)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 2
    it = _Iterations()
    r = train(subset_dir, run, callbacks=[it], **kw)
    n_train = int((read_subset(subset_dir)[1]["split"] == "train").sum())
    steps = -(-n_train // 32)
    assert r["resumed_from_epoch"] == 2 and r["epochs_done"] == 3
    assert it.start == 2 * steps  # the optimizer state came back with the weights
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]
    with pytest.raises(SettingsChanged, match=r"lr: 0\.003 -> 0\.01"):
        train(subset_dir, run, **{**kw, "lr": 0.01})


def test_nan_loss_stops_with_a_clear_message(subset_dir, tmp_path, monkeypatch):
    from keras import ops

    import animetag.train as tr

    monkeypatch.setattr(tr, "make_loss", lambda cfg: lambda y, p: ops.mean(p) * float("nan"))
    with pytest.raises(tr.TrainingDiverged, match="epoch 1, batch 1"):
        tr.train(subset_dir, tmp_path / "run", profile="sample", image_size=32, epochs=1, verbose=0)


def test_mirrored_strategy_on_two_cpu_devices(subset_dir, tmp_path):
    code = textwrap.dedent(f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from animetag.train import train
        s = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        r = train({str(subset_dir)!r}, {str(tmp_path / 'run')!r}, profile="sample", image_size=32, epochs=1,
                  batch_size=16, strategy=s, verbose=0)
        print("RESULT", json.dumps({{"replicas": s.num_replicas_in_sync, **r}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.split("RESULT", 1)[1])
    assert r["replicas"] == 2 and r["epochs_done"] == 1
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["runtime"]["replicas"] == 2


def test_cache_choice_follows_memory(monkeypatch):
    import animetag.pipeline as pl

    monkeypatch.setattr(pl, "_memory_bytes", lambda: 4 << 30)  # 1 GiB budget
    assert pl.choose_cache("auto", 1000, 256, 20 << 20) == "decoded"  # 197 MB of pixels
    assert pl.choose_cache("auto", 25000, 256, 500 << 20) == "encoded"  # 4.9 GB of pixels, 0.5 GB of JPEG
    assert pl.choose_cache("auto", 250000, 256, 5 << 30) == "off"
    assert pl.choose_cache("off", 10, 64) == "off" and pl.choose_cache("memory", 10**7, 256) == "decoded"


def test_augmentation_flips_and_translates_exactly():
    import tensorflow as tf

    from animetag.config import AugmentConfig
    from animetag.pipeline import augment_image

    x = np.random.default_rng(0).uniform(0, 200, size=(64, 8, 8, 3)).astype("float32")
    only_flip = AugmentConfig(flip=True, crop=0, brightness=0, contrast=0, saturation=0)
    flip = np.stack([augment_image(tf.constant(a), only_flip, 8).numpy() for a in x])
    same = np.all(flip == x, axis=(1, 2, 3))
    mirrored = np.all(flip == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and 10 < mirrored.sum() < 54  # each image draws its own flip
    only_shift = AugmentConfig(flip=False, crop=0.25, brightness=0, contrast=0, saturation=0)  # up to 2 px
    shifts = set()
    for a in x:
        b = augment_image(tf.constant(a), only_shift, 8).numpy()
        found = None
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = np.full((12, 12, 3), 255.0, "float32")
                ref[2:10, 2:10] = a
                if np.array_equal(ref[2 + dy: 10 + dy, 2 + dx: 10 + dx], b):
                    found = (dy, dx)
        assert found is not None  # a pure translation with a white border
        shifts.add(found)
    assert len(shifts) > 5
