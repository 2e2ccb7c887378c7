"""Every registered backbone and loss, through the same path a run takes; settings that merge
deeply and come from the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from animetag.config import parse_sets, train_config  # noqa: E402
from animetag.model import build_model, float32_copy  # noqa: E402
from animetag.plugins import BACKBONES, LOSSES  # noqa: E402


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_trains_and_saves_a_portable_tagger(name, tmp_path):
    """weights=None here (no download); on Colab weights='imagenet' starts pretrained."""
    from animetag.fitting import compile_model, training_model

    cfg = train_config("sample", epochs=1, model={"backbone": name})
    keras.utils.set_random_seed(0)
    m = build_model(5, 32, cfg.model, n_ratings=4, rating_probe=True)
    trainer = training_model(m, cfg)  # as a run trains it: uint8 in, augmentation, the tagger
    x = np.random.default_rng(0).integers(0, 255, size=(4, 32, 32, 3)).astype("uint8")
    y = np.zeros((4, 9), "float32")
    y[np.arange(4), np.arange(4)] = 1
    y[:, 4] = 1
    compile_model(trainer, cfg, 5, steps_per_epoch=2, jit=False, n_ratings=4)
    before = [w.numpy().copy() for w in m.trainable_weights]
    loss = trainer.fit(x, y, batch_size=2, epochs=1, verbose=0).history["loss"][0]
    x = x.astype("float32")
    assert np.isfinite(loss)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, m.trainable_weights))  # it learnt
    out = m.predict(x, verbose=0)
    assert out.shape == (4, 9) and np.allclose(out[:, :4].sum(1), 1, atol=1e-5)
    assert m.get_layer("pool").output.shape[-1] > 0  # the embedding the export gives
    float32_copy(m).save(tmp_path / "model.keras")
    code = ("import sys; sys.modules['animetag'] = None\n"
            "import numpy as np, keras\n"
            f"m = keras.saving.load_model({str(tmp_path / 'model.keras')!r})\n"
            f"np.save({str(tmp_path / 'fresh.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))")
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.abs(np.load(tmp_path / "fresh.npy") - out).max() < 1e-5


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_gives_one_value_per_image_that_falls_as_scores_improve(name):
    loss = LOSSES.get(name)(train_config("sample", loss=name))
    y = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], "float32")
    bad = np.where(y == 1, 0.3, 0.7).astype("float32")
    good = np.where(y == 1, 0.9, 0.1).astype("float32")
    per_image = np.asarray(loss.call(keras.ops.convert_to_tensor(y), keras.ops.convert_to_tensor(bad)))
    assert per_image.shape == (2,)
    assert float(loss(y, good)) < float(loss(y, bad))


def test_unknown_names_are_errors_that_list_the_known_ones():
    with pytest.raises(ValueError, match=r"backbone: 'vit' is not one of \['convnext_tiny'"):
        train_config("sample", model={"backbone": "vit"})
    with pytest.raises(ValueError, match=r"loss: 'l2' is not one of \['asl', 'bce', 'focal'\]"):
        train_config("sample", loss="l2")


def test_nested_settings_merge_deeply_and_come_from_the_command_line():
    cfg = train_config("sample", model={"dropout": 0.2})
    assert cfg.model.dropout == 0.2 and cfg.model.widths == (24, 48, 96, 192)  # still the sample model
    sets = parse_sets(["model.dropout=0.25", "augment.flip=false", "model.widths=[8,16,32,64]", "loss=bce"])
    assert sets == {"model": {"dropout": 0.25, "widths": [8, 16, 32, 64]}, "augment": {"flip": False}, "loss": "bce"}
    cfg = train_config("sample", **sets)
    assert (cfg.model.dropout, cfg.model.widths, cfg.model.stem_width, cfg.augment.flip, cfg.loss) == (
        0.25, (8, 16, 32, 64), 24, False, "bce")
    with pytest.raises(ValueError, match=r"model: unknown settings \['dropuot'\]"):
        train_config("sample", **parse_sets(["model.dropuot=0.2"]))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["model.dropout"])


def test_the_cli_passes_set_and_backbone_into_config_json(tmp_path, subset_dir):
    from animetag.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", str(subset_dir), "--run", str(run), "--profile", "sample", "--epochs", "1",
                 "--image-size", "32", "--backbone", "resnet", "--set", "model.dropout=0.3",
                 "--set", "augment.flip=false"]) == 0
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["model"]["backbone"] == "resnet" and saved["model"]["dropout"] == 0.3
    assert saved["augment"]["flip"] is False and saved["model"]["stem_width"] == 24
    m = keras.saving.load_model(run / "model.keras")
    assert not any("_se_" in layer.name for layer in m.layers)  # no SE blocks in the ablation


@pytest.mark.parametrize("name, published_gmacs", [("convnext_tiny", 4.47), ("efficientnetv2_b0", 0.72)])
def test_flops_count_what_the_backbone_papers_publish(name, published_gmacs):
    """At 224 px: ConvNeXt-Tiny 4.5 GMACs (its pointwise layers are Dense layers on the feature
    map, counted once per position), EfficientNetV2-B0 0.72 GMACs (depthwise convolutions)."""
    from animetag.model import flops_per_image

    m = build_model(100, 224, train_config("full", model={"backbone": name}).model)
    assert flops_per_image(m) / 2e9 == pytest.approx(published_gmacs, rel=0.03)
