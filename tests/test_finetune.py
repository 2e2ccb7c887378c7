"""Fine-tuning a trained run with new tags (`animetag train --init-from PARENT`): the shared
outputs carried over by name, new ones at their prior, the backbone frozen first when asked,
and a parent whose weights cannot fit refused."""

import json

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

pytestmark = pytest.mark.slow  # trains a parent and a child


class _Watch(keras.callbacks.Callback):
    """A backbone kernel and the tag head after each epoch, and the optimizer's step count."""

    def __init__(self):
        super().__init__()
        self.stem, self.head, self.steps = [], [], []

    def on_epoch_end(self, epoch, logs=None):
        from animetag.training.compile import core_of

        core = core_of(self.model)
        self.stem.append(core.get_layer("stem_conv").get_weights()[0].copy())
        self.head.append(core.get_layer("tags").get_weights()[0].copy())
        self.steps.append(int(self.model.optimizer.iterations.numpy()))


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt("simulated disconnect")


@pytest.fixture(scope="module")
def family(sample_root, tmp_path_factory):
    """A parent run trained without characters, and the subset its child adds five to."""
    from animetag.config import SubsetConfig
    from animetag.data.subset import build_subset
    from animetag.training.fit import train

    root = tmp_path_factory.mktemp("finetune")
    meta = sample_root / "metadata" / "posts.json"
    common = dict(top_k=20, image_size=32, images_per_shard=64, workers=2)
    build_subset(meta, sample_root, root / "old", SubsetConfig(top_k_character=0, **common), progress=False)
    build_subset(meta, sample_root, root / "new", SubsetConfig(top_k_character=5, splits_from=str(root / "old"),
                                                               **common), progress=False)
    keras.utils.set_random_seed(0)
    train(root / "old", root / "parent", profile="tiny", epochs=2, batch_size=16, verbose=0)
    return root


def test_shared_outputs_come_from_the_parent_by_name_and_new_ones_start_at_their_prior(family):
    from animetag.config import train_config
    from animetag.data.subset import label_matrix
    from animetag.folders import RunFolder, SubsetFolder
    from animetag.model.architecture import build_model
    from animetag.training.finetune import initialise_from

    parent, data = RunFolder(family / "parent"), SubsetFolder(family / "new")
    names = data.tags["name"].iloc[4:].tolist()
    core = build_model(len(names), 32, train_config("tiny").model, n_ratings=4, rating_probe=True)
    got = initialise_from(core, parent, data)
    theirs = parent.model
    assert np.array_equal(core.get_layer("stage2_block1_b_conv").get_weights()[0],
                          theirs.get_layer("stage2_block1_b_conv").get_weights()[0])
    parent_names = parent.tags["name"].iloc[4:].tolist()
    kernel, bias = core.get_layer("tags").get_weights()
    pk, pb = theirs.get_layer("tags").get_weights()
    new = [n for n in names if n not in parent_names]
    assert len(new) == 5 and got["new"] == new and set(got["from_parent"]) == set(names) - set(new)
    for j, n in enumerate(names):
        if n in parent_names:  # by name, wherever the row sits in either file
            i = parent_names.index(n)
            assert np.array_equal(kernel[:, j], pk[:, i]) and bias[j] == pb[i]
    y = label_matrix(data.manifest, data.tags)[(data.manifest["split"] == "train").to_numpy()][:, 4:]
    x = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3)).astype("float32")
    scores = np.asarray(core(x, training=False))[:, 4:]
    for n in new:  # zero kernel, bias at the log-odds: every image scores the tag's frequency
        j = names.index(n)
        assert not kernel[:, j].any()
        assert scores[:, j] == pytest.approx(np.full(3, y[:, j].mean()), abs=1e-5)


def test_a_parent_of_another_size_or_backbone_is_refused_before_anything_is_written(family, tmp_path):
    from animetag.training.fit import train

    kw = dict(profile="tiny", epochs=1, batch_size=16, verbose=0, init_from=str(family / "parent"))
    with pytest.raises(ValueError, match="image size 32 px there, 48 px here"):
        train(family / "new", tmp_path / "a", image_size=48, **kw)
    with pytest.raises(ValueError, match=r"backbone \{'backbone': 'resnet_se'.*\} there, \{'backbone': 'resnet'.* here"):
        train(family / "new", tmp_path / "b", model={"backbone": "resnet"}, **kw)
    with pytest.raises(ValueError, match="freeze_backbone_epochs = 2: only with init_from"):
        train(family / "new", tmp_path / "c", profile="tiny", freeze_backbone_epochs=2, verbose=0)
    assert not (tmp_path / "a" / "config.json").exists() and not (tmp_path / "b" / "config.json").exists()


def test_the_backbone_waits_while_the_head_learns_then_all_train_on_and_a_stop_between_resumes(family, tmp_path):
    """Frozen for the first epoch: the backbone is the parent's at its end while the head has
    moved; stopped there and run again, the second epoch trains everything, the learning
    rate schedule going on from the step reached."""
    from animetag.folders import RunFolder
    from animetag.training.fit import train

    run = tmp_path / "child"
    kw = dict(profile="tiny", epochs=2, batch_size=16, verbose=0, init_from=str(family / "parent"),
              freeze_backbone_epochs=1)
    first = _Watch()
    with pytest.raises(KeyboardInterrupt):
        train(family / "new", run, callbacks=[first, _Interrupt()], **kw)
    parent_stem = RunFolder(family / "parent").model.get_layer("stem_conv").get_weights()[0]
    assert np.array_equal(first.stem[0], parent_stem)  # frozen: as the parent left it
    second = _Watch()
    r = train(family / "new", run, callbacks=[second], **kw)
    assert r["resumed_from_epoch"] == 1 and r["epochs_done"] == 2
    assert not np.allclose(second.stem[0], parent_stem)  # free in the second epoch
    steps = first.steps[0]
    assert steps > 0 and second.steps[0] == 2 * steps  # the schedule went on from where it was
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["init_from"] == str((family / "parent").resolve()) and cfg["train"]["freeze_backbone_epochs"] == 1
    assert len(cfg["parent"]["new"]) == 5 and cfg["parent"]["rating_head"] == "from the parent"
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1]
    # evaluation reports the old and the new tags apart, and the parent on the same test images
    from animetag.evaluation.evaluate import evaluate

    m = evaluate(family / "new", run, n_boot=100)["fine_tuned"]
    assert m["parent_trained_on_test"]["checked"] and m["parent_trained_on_test"]["trained_on"] == 0
    assert m["old_tags"]["n_tags"] == 20 and m["new_tags"]["n_tags"] == 5 and m["parent_old_tags"]["n_tags"] == 20
    key = m["policy"]
    for k in ("f1_micro", "f1_macro"):
        diff, lo, hi = m["old_tags_change"][k]
        assert diff == pytest.approx(m["old_tags"][key][k] - m["parent_old_tags"][key][k], abs=1e-9) and lo <= diff <= hi


def test_a_subset_built_with_splits_from_keeps_each_shared_post_in_its_split(family, sample_root, tmp_path):
    """Without it the two subsets' splits differ and the parent trained on some of the child's
    test images (which evaluation counts and warns about); with it, on none."""
    from animetag.config import SubsetConfig
    from animetag.data.subset import build_subset
    from animetag.folders import RunFolder, SubsetFolder, trained_on

    old, new = SubsetFolder(family / "old").manifest, SubsetFolder(family / "new").manifest
    both = old.merge(new, on="id", suffixes=("_old", "_new"))
    assert len(both) >= 0.95 * len(new) and (both["split_old"] == both["split_new"]).all()
    assert SubsetFolder(family / "new").summary["splits_from"]["kept_their_split"] == len(both)
    parent = RunFolder(family / "parent")
    assert trained_on(parent, SubsetFolder(family / "new")) == {
        "checked": True, "subset": str((family / "old").resolve()), "images": int((new["split"] == "test").sum()),
        "trained_on": 0}
    build_subset(sample_root / "metadata" / "posts.json", sample_root, tmp_path / "plain",
                 SubsetConfig(top_k_character=5, top_k=20, image_size=32, images_per_shard=64, workers=2, seed=3),
                 progress=False)
    plain = SubsetFolder(tmp_path / "plain")
    seen = set(old.loc[old["split"] == "train", "id"])
    test = plain.manifest.loc[plain.manifest["split"] == "test", "id"]
    leak = trained_on(parent, plain)
    assert leak["trained_on"] == sum(i in seen for i in test) > 0


def test_the_teach_study_trains_three_runs_once_and_its_differences_are_the_tables(family, capsys):
    """Notebook 07's study: the parent without the new tags, fine-tuned with them, and from
    scratch for the same total epochs; run again, nothing is trained; each paired difference
    is the difference of the table's F1 values."""
    from animetag.evaluation.teach_study import teach, teach_table

    out = family / "teach"
    runs = teach(family / "old", family / "new", out, "tiny", epochs=1, finetune_epochs=1, batch_size=16)
    assert [runs[k]["settings"]["train"]["epochs"] for k in ("parent", "fine-tuned", "scratch")] == [1, 1, 2]
    assert runs["fine-tuned"]["settings"]["train"]["init_from"] == str((out / "parent").resolve())
    capsys.readouterr()
    again = teach(family / "old", family / "new", out, "tiny", epochs=1, finetune_epochs=1, batch_size=16)
    assert again == runs and capsys.readouterr().out.count("done before") == 3
    table, d = teach_table(family / "new", runs, n_boot=100)
    assert d["n_old_tags"] == 20 and d["n_new_tags"] == 5 and pd.isna(table.loc["parent", "new_f1_micro"])
    for key, a, b, group in (("old_tags_fine_tuned_minus_parent", "fine-tuned", "parent", "old"),
                             ("new_tags_fine_tuned_minus_scratch", "fine-tuned", "scratch", "new"),
                             ("old_tags_fine_tuned_minus_scratch", "fine-tuned", "scratch", "old")):
        for k in ("f1_micro", "f1_macro"):
            diff, lo, hi = d[key][k]
            assert diff == pytest.approx(table.loc[a, f"{group}_{k}"] - table.loc[b, f"{group}_{k}"], abs=1e-9)
            assert lo <= diff <= hi
    assert table.loc["fine-tuned + parent", "epochs"] == table.loc["scratch", "epochs"] == 2
