import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from animetag.config import SubsetConfig  # noqa: E402
from animetag.data.subset import build_subset, label_matrix, read_subset  # noqa: E402


@pytest.fixture(scope="module")
def learn_subset(tmp_path_factory):
    """800 clean sample posts at 32 px, top-30 tags: big enough to show learning quickly."""
    from animetag.data.sample import generate

    root = tmp_path_factory.mktemp("learn")
    generate(root / "sample", 800, seed=5, clean=True)
    out = root / "subset"
    build_subset(root / "sample" / "metadata" / "posts.json", root / "sample", out,
                 SubsetConfig(top_k=30, image_size=32, images_per_shard=128, workers=2), progress=False)
    return out


def test_pipeline_labels_match_the_manifest(subset_dir):
    from animetag.training.tensorflow_backend import make_dataset

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
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and x.max() > 200  # raw 0-255 bytes
    # evaluation reads in a fixed order and never augments
    again = np.concatenate([b[0].numpy() for b in make_dataset(subset_dir, "train", 16)])
    assert np.array_equal(x, again)


@pytest.mark.slow
def test_short_training_learns_beyond_the_prior(learn_subset, tmp_path, keras_alone):
    from animetag.training.fit import train

    r = train(learn_subset, tmp_path / "run", profile="sample", image_size=32, epochs=10, batch_size=32,
              verbose=0)
    print(json.dumps(r, indent=1))
    base = r["prior_baseline_val"]
    assert r["val_f1_micro"] > base["f1_micro"] + 0.05, (r["val_f1_micro"], base)
    assert r["val_f1_macro"] > base["f1_macro"] + 0.03, (r["val_f1_macro"], base)
    run = tmp_path / "run"
    hist = pd.read_csv(run / "history.csv")
    assert {"val_f1_micro", "val_f1_macro", "val_pr_auc", "val_rating_accuracy", "loss"} <= set(hist.columns)
    assert hist["epoch"].tolist() == list(range(10))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["image_size"] == 32 and cfg["data"]["n_outputs"] == 4 + 30 and cfg["data"]["n_tags"] == 30 and cfg["data"]["n_ratings"] == 4
    # model.keras is the best epoch by validation F1-macro and loads with nothing else: in a
    # process without the package (the rating probe's stop-gradient is a stock Identity there)
    alone = keras_alone.load(run / "model.keras")
    assert "error" not in alone, alone["error"]
    assert alone["output_shape"] == [None, 34] and alone["layers"]["rating_probe"] == "Identity"  # ratings, then the top-30 tags
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


@pytest.mark.slow
@pytest.mark.backends
def test_resume_continues_from_the_last_finished_epoch(subset_dir, tmp_path):
    from animetag.training.fit import SettingsChanged, train

    run = tmp_path / "run"
    kw = dict(profile="tiny", image_size=32, epochs=3, batch_size=32, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(subset_dir, run, callbacks=[_Interrupt(2)], **kw)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 2
    # after a disconnect the checkpoint is read by a new process: everything it names (the
    # rating loss and metrics, the augmentation) must be registered by importing the package
    import subprocess
    import sys

    code = ("import animetag.training.fit, keras\n"
            f"m = keras.saving.load_model({str(run / 'checkpoints' / 'last.keras')!r})\n"
            "print(type(m.loss).__name__, m.optimizer.iterations.numpy())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = int((read_subset(subset_dir)[1]["split"] == "train").sum()) // 32
    assert f"WithRating {2 * steps}" in proc.stdout
    it = _Iterations()
    r = train(subset_dir, run, callbacks=[it], **kw)
    n_train = int((read_subset(subset_dir)[1]["split"] == "train").sum())
    steps = n_train // 32  # whole batches only
    assert r["resumed_from_epoch"] == 2 and r["epochs_done"] == 3
    assert it.start == 2 * steps  # the optimizer state came back with the weights
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]
    with pytest.raises(SettingsChanged, match=r"lr: 0\.003 -> 0\.01"):
        train(subset_dir, run, **{**kw, "lr": 0.01})

    # asking for more epochs extends the finished run from its last checkpoint, with the
    # cosine schedule laid out again over the new total; other changes are still refused
    from animetag.config import train_config
    from animetag.training.compile import lr_schedule

    hist = pd.read_csv(run / "history.csv")
    assert hist["learning_rate"].iloc[-1] == pytest.approx(0.0, abs=1e-6)  # the 3-epoch schedule ran out
    # a run recorded by an older version lacks the settings added since, and wrote others as
    # they were then (the loss's settings flat, a `weights` field in every model group, every
    # output row counted as n_tags): it resumes all the same
    rec = json.loads((run / "config.json").read_text())
    for key in ("rating_loss_weight", "rating_joint"):
        del rec["train"][key]
    del rec["train"]["model"]["backbone"]
    rec["train"]["model"]["weights"] = ""
    loss = rec["train"].pop("loss_settings")
    rec["train"].update({"focal_alpha": loss["alpha"], "focal_gamma": loss["gamma"], "asl_gamma_neg": 4.0,
                         "asl_gamma_pos": 0.0, "asl_clip": 0.05})
    rec["data"]["n_tags"] = rec["data"].pop("n_outputs")
    (run / "config.json").write_text(json.dumps(rec))
    it = _Iterations()
    r = train(subset_dir, run, callbacks=[it], **{**kw, "epochs": 5})
    assert r["resumed_from_epoch"] == 3 and r["epochs_done"] == 5 and it.start == 3 * steps
    hist = pd.read_csv(run / "history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2, 3, 4]
    new = lr_schedule(train_config("tiny", epochs=5, lr=kw.get("lr", 0.003)), steps)
    assert hist["learning_rate"].iloc[3] == pytest.approx(float(new(4 * steps)), rel=1e-4)
    assert hist["learning_rate"].iloc[3] > 1e-4  # training went on, it did not idle at rate 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["epochs"] == 5 and cfg["extended"][0]["from_epochs"] == 3
    with pytest.raises(SettingsChanged, match="batch_size"):
        train(subset_dir, run, **{**kw, "epochs": 6, "batch_size": 16})
    with pytest.raises(SettingsChanged, match="trained 5 epochs already"):
        train(subset_dir, run, **{**kw, "epochs": 4})


@pytest.mark.slow
@pytest.mark.backends
def test_nan_loss_stops_with_a_clear_message(subset_dir, tmp_path, monkeypatch):
    from keras import ops

    import animetag.training.compile as fitting
    import animetag.training.fit as tr

    monkeypatch.setattr(fitting, "make_loss", lambda cfg, n_ratings=0: lambda y, p: ops.mean(p) * float("nan"))
    with pytest.raises(tr.TrainingDiverged, match="epoch 1, batch 1"):
        tr.train(subset_dir, tmp_path / "run", profile="tiny", image_size=32, epochs=1, verbose=0)


# split sizes whose remainders at batch 8 are 0, 1, half a batch and a batch minus one: with
# two replicas, a remainder of at most 4 used to leave one replica an empty batch
REMAINDER_CASES = {"r0": 16, "r1": 17, "r7": 23}  # a whole last batch, one image over, one short


@pytest.mark.slow
def test_mirrored_strategy_gives_every_replica_a_whole_batch(tmp_path):
    import animetag.training.fit  # noqa: F401  (registers what the checkpoint holds)
    from animetag.metrics import f1_scores
    from animetag.model.losses import make_loss
    from animetag.training.tensorflow_backend import make_dataset
    from conftest import write_subset

    for i, (name, n) in enumerate(REMAINDER_CASES.items()):
        write_subset(tmp_path / name / "data", {"train": n, "val": n, "test": 4}, image_size=16, seed=i)
    code = textwrap.dedent(f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from animetag.training.fit import train
        s = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        for name in {list(REMAINDER_CASES)!r}:
            root = {str(tmp_path)!r} + "/" + name
            r = train(root + "/data", root + "/run", profile="tiny", image_size=16, epochs=1, batch_size=8,
                      strategy=s, verbose=0)
            print("RESULT", json.dumps({{"name": name, "replicas": s.num_replicas_in_sync, **r}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line.split("RESULT", 1)[1]) for line in out.stdout.splitlines() if "RESULT" in line]
    assert [r["name"] for r in results] == list(REMAINDER_CASES)
    for r in results:
        run, n = tmp_path / r["name"] / "run", REMAINDER_CASES[r["name"]]
        assert r["replicas"] == 2 and r["epochs_done"] == 1
        assert json.loads((run / "config.json").read_text())["runtime"]["replicas"] == 2
        # steps follow whole batches: the optimizer stepped n // 8 times
        last = keras.saving.load_model(run / "checkpoints" / "last.keras")
        assert int(last.optimizer.iterations.numpy()) == n // 8
        model = keras.saving.load_model(run / "model.keras")
        assert all(np.isfinite(w).all() for w in model.get_weights())
        # the replicas' validation equals one device's over every validation image
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in make_dataset(tmp_path / r["name"] / "data", "val", 8)])
        x, y = np.concatenate(xs), np.concatenate(ys)
        assert len(x) == n
        scores = np.asarray(model(x.astype("float32"), training=False))
        single = f1_scores(y, scores >= 0.5)
        hist = pd.read_csv(run / "history.csv").iloc[-1]
        assert abs(hist["val_f1_micro"] - single["f1_micro"]) < 1e-5, (r["name"], hist["val_f1_micro"], single)
        assert abs(hist["val_f1_macro"] - single["f1_macro"]) < 1e-5, (r["name"], hist["val_f1_macro"], single)
        from animetag.config import train_config

        loss = float(make_loss(train_config("sample"))(y, scores))
        assert abs(hist["val_loss"] - loss) < 1e-4 * max(1.0, loss), (r["name"], hist["val_loss"], loss)


def test_evaluation_batches_are_padded_with_zero_weights(subset_dir):
    from animetag.folders import SubsetFolder
    from animetag.training.tensorflow_backend import make_dataset

    def split_size(d, split):
        return SubsetFolder(d).split_size(split)

    n = split_size(subset_dir, "val")
    batches = list(make_dataset(subset_dir, "val", 7, pad_to_batch=True, with_ids=True))
    assert all(b[0].shape[0] == 7 for b in batches) and len(batches) == -(-n // 7)
    w = np.concatenate([b[2].numpy() for b in batches])
    ids = np.concatenate([b[3].numpy() for b in batches])
    assert w.sum() == n and (w[:n] == 1).all() and (ids[n:] == -1).all()
    train = list(make_dataset(subset_dir, "train", 7, training=True))
    assert len(train) == split_size(subset_dir, "train") // 7 and all(b[0].shape[0] == 7 for b in train)
    assert train[0][0].dtype == "uint8"  # the host feeds bytes; the model casts and augments


def test_cache_choice_counts_reclaimable_memory(monkeypatch, tmp_path):
    import animetag.data.loader as pl

    # a 12.7 GB Colab machine: little free memory, much page cache; MemAvailable counts both
    meminfo = "MemTotal:       13290460 kB\nMemFree:         1200000 kB\nMemAvailable:   10500000 kB\n"
    real_open = open

    def fake_open(path, *a, **kw):
        if str(path) == "/proc/meminfo":
            return io.StringIO(meminfo)
        return real_open(path, *a, **kw)

    import builtins
    import io

    monkeypatch.setattr(builtins, "open", fake_open)
    assert pl.memory_bytes() == 10500000 * 1024
    # the thesis's 20,000 training images at 256 px (3.9 GB decoded) are cached in memory
    assert pl.choose_cache("auto", 20000, 256, 800 << 20) == "decoded"
    # ... and the validation split too, after the training split's share
    assert pl.choose_cache("auto", 2500, 256, 100 << 20, reserved=pl.decoded_bytes(20000, 256)) == "decoded"
    assert pl.choose_cache("auto", 30000, 256, 1 << 30) == "encoded"  # 5.9 GB of pixels
    assert pl.choose_cache("auto", 250000, 256, 6 << 30) == "off"
    assert pl.choose_cache("off", 10, 64) == "off" and pl.choose_cache("memory", 10**7, 256) == "decoded"


def _find_shift(a, b, pad):
    """(flipped, dy, dx) if b is a (mirrored) a shifted by whole pixels with a white border."""
    s = a.shape[0]
    for flipped in (False, True):
        src = a[:, ::-1] if flipped else a
        ref = np.full((s + 2 * pad, s + 2 * pad, 3), 255.0, "float32")
        ref[pad:pad + s, pad:pad + s] = src
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if np.array_equal(ref[pad - dy: pad - dy + s, pad - dx: pad - dx + s], b):
                    return flipped, dy, dx
    return None


def test_augmentation_flips_and_translates_exactly():
    from animetag.model.augmentation import Augment

    x = np.random.default_rng(0).integers(0, 200, size=(64, 8, 8, 3)).astype("uint8")
    only_flip = Augment(flip=True, crop=0, brightness=0, contrast=0, saturation=0, seed=1)
    flip = np.asarray(only_flip(x, training=True))
    same = np.all(flip == x, axis=(1, 2, 3))
    mirrored = np.all(flip == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and 10 < mirrored.sum() < 54  # each image draws its own flip
    only_shift = Augment(flip=False, crop=0.25, brightness=0, contrast=0, saturation=0, seed=2)  # up to 2 px
    shifted = np.asarray(only_shift(x, training=True))
    found = [_find_shift(a.astype("float32"), b, 2) for a, b in zip(x, shifted)]
    assert all(f is not None and not f[0] for f in found)  # a pure translation with a white border
    assert len(set(found)) > 10  # each image draws its own shift
    # not training: the images as they are, as floats
    jitter = Augment(seed=3)
    assert np.array_equal(np.asarray(jitter(x, training=False)), x.astype("float32"))
    y = np.asarray(jitter(x, training=True))
    assert y.min() >= 0 and y.max() <= 255 and np.abs(y - x).mean() > 1.0


def test_augmentation_compiles_under_xla_and_differs_across_replicas(monkeypatch):
    import tensorflow as tf

    import animetag.model.augmentation as au

    x = tf.constant(np.random.default_rng(0).integers(0, 255, size=(4, 16, 16, 3)).astype("uint8"))
    layer = au.Augment(seed=0)
    y = tf.function(lambda t: layer(t, training=True), jit_compile=True)(x)
    assert y.shape == (4, 16, 16, 3) and float(tf.reduce_max(tf.abs(y - tf.cast(x, tf.float32)))) > 0
    # every replica reads the same generator state; the replica's index in the seed makes
    # replica 1 draw other numbers than replica 0 from it
    draws = []
    for replica in (0, 1):
        monkeypatch.setattr(au, "_replica_offset", lambda r=replica: tf.constant(r))
        layer = au.Augment(seed=0)
        draws.append(np.asarray(layer._uniform((8,))))
    assert not np.array_equal(draws[0], draws[1])
    monkeypatch.setattr(au, "_replica_offset", lambda: 0)
    assert np.array_equal(np.asarray(au.Augment(seed=0)._uniform((8,))), draws[0])


def test_the_loader_without_tensorflow_gives_what_tf_data_gives(subset_dir):
    """The JAX backend's input (data.loader) against tf.data on the same split: the same ids,
    labels and padding; pixels within the two JPEG decoders' rounding."""
    from animetag.data.loader import SplitLoader
    from animetag.training.tensorflow_backend import make_dataset

    ours = list(SplitLoader(subset_dir, "val", 7, pad_to_batch=True, with_ids=True, processes=False).epoch())
    theirs = list(make_dataset(subset_dir, "val", 7, pad_to_batch=True, with_ids=True))
    assert len(ours) == len(theirs) and all(b[0].shape == (7, 32, 32, 3) and b[0].dtype == np.uint8 for b in ours)
    cat = [np.concatenate(p) for p in zip(*ours)]
    ref = [np.concatenate([t.numpy() for t in p]) for p in zip(*theirs)]
    assert (cat[2] == ref[2]).all()  # the same weights: real images first, then zero-weight padding
    real = cat[3] >= 0
    a, b = np.argsort(cat[3][real]), np.argsort(ref[3][ref[3] >= 0])
    assert (cat[3][real][a] == ref[3][ref[3] >= 0][b]).all()
    assert (cat[1][real][a] == ref[1][ref[3] >= 0][b]).all()
    diff = np.abs(cat[0][real][a].astype(int) - ref[0][ref[3] >= 0][b].astype(int))
    assert diff.mean() < 2.0, diff.mean()  # Pillow's and TensorFlow's IDCTs round differently
    assert (cat[0][~real] == 0).all() and (cat[1][~real] == 0).all()


def test_the_loader_order_depends_on_seed_and_epoch_only_and_shares_add_up(subset_dir):
    from animetag.data.loader import SplitLoader
    from animetag.folders import SubsetFolder

    def make(**kw):
        return SplitLoader(subset_dir, "train", 8, training=True, seed=4, processes=False, **kw)

    one = make()
    e1, e1_again, e2 = one.rows(1), make().rows(1), one.rows(2)
    assert all((a == b).all() for a, b in zip(e1, e1_again))  # a resumed run reads epoch 1 alike
    assert any((a != b).any() for a, b in zip(e1, e2))  # and a new order each epoch
    n = SubsetFolder(subset_dir).split_size("train")
    seen = np.concatenate(e1)
    assert len(set(seen.tolist())) == len(seen) == (n // 8) * 8  # whole batches, no image twice
    # two processes, one share each, build the global batches one process reading both builds
    both, first, second = make(shares=2, take=(0, 1)), make(shares=2, take=(0,)), make(shares=2, take=(1,))
    assert len(both) == len(first) == len(second)
    for step in (0, len(both) - 1):
        whole = both.batch(both.rows(3)[step])
        parts = first.batch(first.rows(3)[step]), second.batch(second.rows(3)[step])
        assert all((np.concatenate([p[i] for p in parts]) == whole[i]).all() for i in range(2))
    # each process reads its own shard files only
    from animetag.data.shards import decode_example, list_shards, read_records

    files = list_shards(subset_dir, "train")
    own = {decode_example(r)[0] for f in files[0::2] for r in read_records(f)}
    read = {int(i) for b in SplitLoader(subset_dir, "train", 8, training=True, shares=2, take=(0,), with_ids=True,
                                        processes=False).epoch(0) for i in b[2]}
    assert read and read <= own
    with pytest.raises(ValueError, match="does not divide among 3 processes"):
        make(shares=3, take=(0,))


def test_worker_processes_fill_the_cache_as_threads_do(subset_dir):
    """The decoded cache filled by spawned worker processes (pixels back through the pool, one
    shard at a time) holds what threads decode in place: the same batches, image for image."""
    import warnings

    from animetag.data.loader import SplitLoader

    def batches(processes):
        loader = SplitLoader(subset_dir, "train", 8, training=True, cache="memory", workers=2, processes=processes)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a pool that cannot start falls back to threads with a warning
            return list(loader.epoch(1)), loader

    (ours, loader), (theirs, _) = batches(True), batches(False)
    assert len(loader.all_shares[0].by_file()) > 1  # several shards: the pool was used
    assert len(ours) == len(theirs) > 0
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(ours, theirs))
