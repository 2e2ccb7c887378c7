"""Every registered backbone and loss, through the same path a run takes; settings that merge
deeply and come from the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from animetag.config import parse_sets, train_config  # noqa: E402
from animetag.model.architecture import build_model, float32_copy  # noqa: E402
from animetag.registry import BACKBONES, LOSSES  # noqa: E402
from animetag.training.compile import with_plugin_settings  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_trains_and_saves_a_portable_tagger(name, tmp_path, keras_alone):
    """weights=None here (no download); on Colab weights='imagenet' starts pretrained. The two
    training steps run eagerly: tracing a keras.applications network's training step costs
    half a minute on two cores, and the compiled forward pass is exercised by `predict` below
    (and the compiled training step by notebook 06 and every other training test)."""
    from animetag.training.compile import compile_model, training_model

    cfg = train_config("tiny", epochs=1, model={"backbone": name})
    keras.utils.set_random_seed(0)
    m = build_model(5, 32, cfg.model, n_ratings=4, rating_probe=True)
    trainer = training_model(m, cfg)  # as a run trains it: uint8 in, augmentation, the tagger
    x = np.random.default_rng(0).integers(0, 255, size=(4, 32, 32, 3)).astype("uint8")
    y = np.zeros((4, 9), "float32")
    y[np.arange(4), np.arange(4)] = 1
    y[:, 4] = 1
    compile_model(trainer, cfg, 5, steps_per_epoch=2, jit=False, n_ratings=4)
    trainer.run_eagerly = True
    before = [w.numpy().copy() for w in m.trainable_weights]
    loss = trainer.fit(x, y, batch_size=2, epochs=1, verbose=0).history["loss"][0]
    x = x.astype("float32")
    assert np.isfinite(loss)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, m.trainable_weights))  # it learnt
    out = m.predict(x, verbose=0)
    assert out.shape == (4, 9) and np.allclose(out[:, :4].sum(1), 1, atol=1e-5)
    assert m.get_layer("pool").output.shape[-1] > 0  # the embedding the export gives
    float32_copy(m).save(tmp_path / "model.keras")
    alone = keras_alone.load(tmp_path / "model.keras", x)  # Keras without the package
    assert "error" not in alone, alone["error"]
    assert np.abs(alone["scores"] - out).max() < 1e-5


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_gives_one_value_per_image_that_falls_as_scores_improve(name):
    from animetag.model.losses import make_loss

    loss = make_loss(train_config("sample", loss=name))
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
        with_plugin_settings(train_config("sample", loss="l2"))


def test_nested_settings_merge_deeply_and_come_from_the_command_line():
    cfg = train_config("sample", model={"dropout": 0.2})
    assert cfg.model.dropout == 0.2 and cfg.model.settings["widths"] == (24, 48, 96, 192)  # still the sample model
    sets = parse_sets(["model.dropout=0.25", "augment.flip=false", "model.widths=[8,16,32,64]", "loss=bce"])
    assert sets == {"model": {"dropout": 0.25, "widths": [8, 16, 32, 64]}, "augment": {"flip": False}, "loss": "bce"}
    cfg = with_plugin_settings(train_config("sample", **sets))
    s = cfg.model.settings
    assert (cfg.model.dropout, s["widths"], s["stem_width"], cfg.augment.flip, cfg.loss) == (
        0.25, [8, 16, 32, 64], 24, False, "bce")
    with pytest.raises(ValueError, match=r"model.dropuot: not a setting of backbone 'resnet_se'"):
        with_plugin_settings(train_config("sample", **parse_sets(["model.dropuot=0.2"])))


def test_each_backbone_owns_its_settings():
    """Another backbone is not forced into the ResNet's fields: the sample profile's widths
    stay with the ResNets, and a ResNet field given to ConvNeXt is refused by name."""
    cfg = with_plugin_settings(train_config("sample", model={"backbone": "convnext_tiny"}))
    assert cfg.model.settings == {"weights": ""}
    assert with_plugin_settings(train_config("sample", model={"backbone": "resnet"})).model.settings["widths"] == [
        24, 48, 96, 192]  # resnet shares resnet_se's settings
    with pytest.raises(ValueError, match=r"model.widths: not a setting of backbone 'convnext_tiny'; its settings are "
                                         r"\['weights'\]"):
        with_plugin_settings(train_config("sample", model={"backbone": "convnext_tiny", "widths": [8]}))
    with pytest.raises(ValueError, match=r"model.weights = 'imagnet': must be one of , imagenet"):
        with_plugin_settings(train_config("sample", model={"backbone": "convnext_tiny", "weights": "imagnet"}))
    with pytest.raises(ValueError, match=r"loss_settings.\['alpha'\]: loss 'bce' takes no settings"):
        with_plugin_settings(train_config("sample", loss="bce", loss_settings={"alpha": 0.5}))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["model.dropout"])


@pytest.mark.slow
def test_the_cli_passes_set_and_backbone_into_config_json(tmp_path, subset_dir):
    from animetag.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", str(subset_dir), "--run", str(run), "--profile", "tiny", "--epochs", "1",
                 "--image-size", "32", "--backbone", "resnet", "--set", "model.dropout=0.3",
                 "--set", "augment.flip=false"]) == 0
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["model"]["backbone"] == "resnet" and saved["model"]["dropout"] == 0.3
    assert saved["augment"]["flip"] is False and saved["model"]["stem_width"] == 8
    m = keras.saving.load_model(run / "model.keras")
    assert not any("_se_" in layer.name for layer in m.layers)  # no SE blocks in the ablation


@pytest.mark.slow
@pytest.mark.parametrize("name, published_gmacs", [("convnext_tiny", 4.47), ("efficientnetv2_b0", 0.72)])
def test_flops_count_what_the_backbone_papers_publish(name, published_gmacs):
    """At 224 px: ConvNeXt-Tiny 4.5 GMACs (its pointwise layers are Dense layers on the feature
    map, counted once per position), EfficientNetV2-B0 0.72 GMACs (depthwise convolutions)."""
    from animetag.model.architecture import flops_per_image

    m = build_model(100, 224, train_config("full", model={"backbone": name}).model)
    assert flops_per_image(m) / 2e9 == pytest.approx(published_gmacs, rel=0.03)


PLUGIN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "animetag-theirs"
version = "0.1.0"

[project.entry-points."animetag.plugins"]
theirs = "animetag_theirs"
"""

PLUGIN_MODULE = '''\
"""A plug-in package of someone else's: a backbone with its own settings, a loss and a policy."""
from dataclasses import dataclass

import keras

from animetag.registry import BACKBONES, LOSSES, POLICIES


@dataclass
class TheirSettings:
    width: int = 8


@BACKBONES.register("theirs_net", settings=TheirSettings)
def theirs_net(inputs, settings, synchronized_bn=False):
    """Two convolutions, someone else's."""
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(settings.width, 3, strides=2, activation="relu", name="theirs_conv1")(x)
    return keras.layers.Conv2D(settings.width, 3, strides=2, activation="relu", name="theirs_conv2")(x)


@LOSSES.register("theirs_bce")
def theirs_bce():
    """Binary cross-entropy with label smoothing."""
    return keras.losses.BinaryCrossentropy(label_smoothing=0.1)


@POLICIES.register("0.3", key="at_0.3", label="a fixed 0.3", kind="0.5", fixed=True)
def at_three_tenths(y_val, s_val, tuned):
    """A fixed 0.3 for every tag."""
    return 0.3
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """Someone else's package with an `animetag.plugins` entry point, pip-installed (from its
    own pyproject.toml, no index) into a folder that a fresh process puts on its path."""
    src = tmp_path_factory.mktemp("theirs")
    (src / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (src / "animetag_theirs.py").write_text(PLUGIN_MODULE)
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(site), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(site.glob("animetag_theirs-*.dist-info/entry_points.txt"))
    return site


def _animetag(args, site, tmp_path):
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}
    code = "import sys; from animetag.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)


@pytest.mark.slow
def test_a_plugin_package_is_found_by_its_entry_point_in_a_fresh_process(plugin_site, subset_dir, tmp_path):
    """`animetag train --backbone theirs_net --loss theirs_bce` in a new process trains the
    other package's backbone with its own setting; `animetag plugins` lists all three."""
    listed = _animetag(["plugins"], plugin_site, tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    for name in ("theirs_net", "theirs_bce", "0.3", "resnet_se", "focal", "per-tag"):
        assert f"  {name} " in listed.stdout, listed.stdout
    assert '{"width": 8}' in listed.stdout  # its settings, with their defaults

    run = tmp_path / "run"
    proc = _animetag(["train", "--data", str(subset_dir), "--run", str(run), "--profile", "tiny", "--epochs", "1",
                      "--image-size", "32", "--backbone", "theirs_net", "--loss", "theirs_bce",
                      "--set", "model.width=4"], plugin_site, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["model"] == {"backbone": "theirs_net", "dropout": 0.1, "width": 4} and saved["loss"] == "theirs_bce"
    m = keras.saving.load_model(run / "model.keras")
    assert m.get_layer("theirs_conv2").output.shape[-1] == 4
    # without the package on the path the name is an error that lists the known ones
    import os

    bare = subprocess.run([sys.executable, "-c", "import sys; from animetag.cli import main; sys.exit(main(sys.argv[1:]))",
                           "train", "--data", str(subset_dir), "--run", str(tmp_path / "other"), "--profile", "sample",
                           "--backbone", "theirs_net"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert bare.returncode == 2 and "backbone: 'theirs_net' is not one of ['convnext_tiny'" in bare.stderr, bare.stderr


def test_registering_the_same_function_again_is_harmless_and_another_one_is_refused():
    """A notebook cell run twice defines its function anew: the second registration replaces
    the first. Another function under a taken name is an error naming both."""
    from animetag.registry import Registry

    reg = Registry("widget", "animetag.settings")
    cell = "@reg.register('mine')\ndef mine():\n    '''Mine.'''\n    return {n}\n"
    ns = {"reg": reg, "__name__": "__main__"}
    exec(cell.format(n=1), ns)
    exec(cell.format(n=2), ns)  # the cell again, edited
    assert reg.names() == ["mine"] and reg.get("mine")() == 2
    with pytest.raises(ValueError, match=r"widget 'mine' is already registered by __main__.mine; "
                                         r"__main__.other needs another name"):
        exec("@reg.register('mine')\ndef other():\n    return 3\n", ns)


def test_a_policy_registered_beside_the_others_is_evaluated_and_plotted(tmp_path):
    """A fifth policy is one function: evaluation scores it, the policy table and the plot
    show it, and the comparison rows carry it (no key is listed by hand anywhere)."""
    from animetag.evaluation.evaluate import evaluate_scores, policy_table
    from animetag.evaluation.plots import threshold_policies
    from animetag.model import policies
    from animetag.registry import POLICIES

    @POLICIES.register("0.2", key="at_0.2", label="a fixed 0.2", kind="0.5", fixed=True)
    def at_fifth(y_val, s_val, tuned):
        """A fixed 0.2 for every tag."""
        return 0.2

    try:
        rng = np.random.default_rng(0)
        y = (rng.uniform(size=(200, 6)) < 0.3).astype("uint8")
        s = np.clip(y * 0.3 + rng.uniform(size=y.shape) * 0.6, 0, 1).astype("float32")
        m, th = evaluate_scores(y[:100], s[:100], y[100:], s[100:], n_boot=20)
        from animetag.metrics import f1_at

        assert m["at_0.2"] == f1_at(y[100:], s[100:], 0.2) and "at_0.2" in m["ci95_by_policy"]
        assert "a fixed 0.2" in policy_table(m).index
        assert len(threshold_policies(m).axes[0].get_xticklabels()) == len(policies.table()) == 5
        assert policies.get("0.2").for_tags(None, ["a", "b"]).tolist() == [0.2, 0.2]  # needs no thresholds.json
    finally:
        POLICIES._items.pop("0.2")


def test_a_metadata_format_is_one_registered_reader(tmp_path):
    """A new file format is one function: registered with its suffix, `load_posts` reads it
    like the built-in ones (and malformed records are still reported by line)."""
    import csv

    from animetag.data.danbooru import load_posts
    from animetag.registry import READERS

    @READERS.register("tsv", suffixes=(".tsv",))
    def read_tsv(path, report, columns=None, present=None):
        """Tab-separated values with a header row."""
        with open(path, encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            for row in reader:
                yield reader.line_num, row

    try:
        p = tmp_path / "posts.tsv"
        p.write_text("id\tmd5\trating\ttag_string_general\n1\t" + "a" * 32 + "\tg\tsmile 1girl\n"
                     "x\t\tg\tsmile\n2\t" + "b" * 32 + "\ts\tsolo\n")
        posts, report = load_posts(p)
        assert posts["id"].tolist() == [1, 2] and posts["tags_general"].tolist() == ["smile 1girl", "solo"]
        assert len(report.malformed) == 1 and report.malformed[0]["line"] == 3
        assert "tsv" in READERS.names() and {"jsonl", "json_array", "csv", "parquet"} <= set(READERS.names())
    finally:
        READERS._items.pop("tsv")


def test_the_readme_plugin_example_runs_as_written():
    """The README's plug-in module, executed as it stands: its backbone doubles the ResNet's
    widths, its loss and policy work through the same paths as the built-in ones."""
    import re
    from pathlib import Path

    from animetag.model import policies
    from animetag.model.losses import make_loss
    from animetag.registry import POLICIES
    from animetag.training.compile import with_plugin_settings

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n# my_package/animetag_plugins.py\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README plug-in example", "exec"), {"__name__": "my_package.animetag_plugins"})
    try:
        cfg = with_plugin_settings(train_config("tiny", model={"backbone": "wide_resnet"}, loss="bce_smooth",
                                                loss_settings={"smoothing": 0.2}))
        m = build_model(5, 32, cfg.model)
        assert m.get_layer("stage2_block1_b_conv").filters == 2 * cfg.model.settings["widths"][1]
        assert make_loss(cfg).get_config()["label_smoothing"] == 0.2
        rng = np.random.default_rng(0)
        y = (rng.uniform(size=(80, 4)) < 0.3).astype(int)
        s = np.clip(y * 0.4 + rng.uniform(size=y.shape) * 0.6, 0, 1)
        assert 0 < policies.get("top-F1-macro").tune(y, s, {}) < 1
    finally:
        BACKBONES._items.pop("wide_resnet")
        LOSSES._items.pop("bce_smooth")
        POLICIES._items.pop("top-F1-macro")
