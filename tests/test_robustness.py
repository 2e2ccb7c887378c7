"""A disconnect or a typo never breaks a run: interrupts at any point resume with the same
command, settings are checked before anything is written, bad input becomes a recorded
reason or a warning with counts, locks are never shared, outputs never replace another
command's files."""

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from animetag.cli import main
from animetag.locks import FolderLocked, folder_lock

keras = pytest.importorskip("keras")

TRAIN = ["--profile", "tiny", "--image-size", "32", "--batch-size", "32"]


class _StopInEpoch(keras.callbacks.Callback):
    """Ctrl-C (a Colab disconnect) in the middle of epoch `epoch` (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.now = epoch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.now = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.now == self.epoch and batch == 1:
            raise KeyboardInterrupt("simulated disconnect")


def _trainable(path: Path) -> list[np.ndarray]:
    model = keras.saving.load_model(path)
    return [np.array(w.numpy()) for w in model.trainable_weights]


@pytest.mark.slow
def test_a_run_stopped_in_its_first_epoch_resumes_with_the_same_command(subset_dir, tmp_path, capsys):
    from animetag.training.fit import train

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(subset_dir, run, profile="tiny", image_size=32, batch_size=32, epochs=1, verbose=0,
              callbacks=[_StopInEpoch(0)])
    assert not (run / "checkpoints" / "state.json").exists()
    code = main(["train", "--data", str(subset_dir), "--run", str(run), *TRAIN, "--epochs", "1"])
    assert code == 0, capsys.readouterr().err
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0]


@pytest.mark.slow
def test_an_extension_stopped_mid_epoch_resumes_at_the_recomputed_rate_and_learns(subset_dir, tmp_path, capsys):
    from animetag.config import train_config
    from animetag.data.subset import read_subset
    from animetag.training.compile import lr_schedule
    from animetag.training.fit import train

    run = tmp_path / "run"
    kw = dict(profile="tiny", image_size=32, batch_size=32, verbose=0)
    train(subset_dir, run, epochs=2, **kw)
    before = _trainable(run / "checkpoints" / "last.keras")
    with pytest.raises(KeyboardInterrupt):  # extended to 4 epochs, stopped in the third
        train(subset_dir, run, epochs=4, callbacks=[_StopInEpoch(2)], **kw)
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 4
    code = main(["train", "--data", str(subset_dir), "--run", str(run), *TRAIN, "--epochs", "4"])  # the same command
    assert code == 0, capsys.readouterr().err
    hist = pd.read_csv(run / "history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2, 3]
    steps = int((read_subset(subset_dir)[1]["split"] == "train").sum()) // 32
    schedule = lr_schedule(train_config("tiny", epochs=4, image_size=32, batch_size=32), steps)
    for e in (2, 3):
        assert hist["learning_rate"].iloc[e] == pytest.approx(float(schedule((e + 1) * steps)), rel=1e-4)
    assert hist["learning_rate"].iloc[2] > 1e-4
    after = _trainable(run / "checkpoints" / "last.keras")
    moved = max(float(np.abs(a - b).max()) for a, b in zip(after, before))
    assert moved > 1e-3, moved  # the weights moved in epochs 3 and 4


@pytest.mark.parametrize("setting, words", [
    ("model.dropout=5", "model.dropout = 5.0: must be at least 0 and below 1"),
    ("model.stem_width=-4", "model.stem_width = -4: must be at least 1"),
    ("model.se_ratio=0", "model.se_ratio = 0: must be at least 1"),
    ("epochs=1.5", "epochs = 1.5: expected an integer"),
    ("model=resnet", "model = 'resnet': a group of settings"),
    ("lr=abc", "lr = 'abc': expected a number"),
    ("model.widths=5", "model.widths = 5: expected a list of integers"),
    ("augment.crop=3", "augment.crop = 3.0: must be at least 0 and at most 0.5"),
    ("augment.flip=maybe", "augment.flip = 'maybe': expected true or false"),
    ("warmup_epochs=-1", "warmup_epochs = -1.0: must be at least 0"),
    ("weight_decay=-1", "weight_decay = -1.0: must be at least 0"),
    ("loss_settings.alpha=7", "loss_settings.alpha = 7.0: must be at least 0 and at most 1"),
    ("focal_alpha=7", "loss_settings.alpha = 7.0: must be at least 0 and at most 1"),  # the older name
    ("model.dropuot=0.2", "model.dropuot: not a setting of backbone 'resnet_se'"),
    ("rating_loss_weight=-2", "rating_loss_weight = -2.0: must be at least 0"),
    ("cache=bogus", "cache = 'bogus': must be one of auto, memory, off"),
])
def test_a_bad_setting_is_one_line_and_records_nothing(subset_dir, tmp_path, capsys, setting, words):
    run = tmp_path / "run"
    code = main(["train", "--data", str(subset_dir), "--run", str(run), *TRAIN, "--epochs", "1", "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not (run / "config.json").exists()


@pytest.mark.slow
def test_after_a_bad_setting_the_corrected_command_trains(subset_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(subset_dir), "--run", str(run), *TRAIN, "--epochs", "1"]
    assert main([*args, "--set", "model.se_ratio=0"]) == 2
    assert main([*args, "--set", "model.se_ratio=4", "--set", "augment.flip=False"]) == 0, capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())["train"]
    assert cfg["model"]["se_ratio"] == 4 and cfg["augment"]["flip"] is False  # a boolean, not the text "False"


def test_booleans_and_lists_from_the_command_line_take_their_declared_types():
    from animetag.config import parse_sets, train_config

    for text, want in (("False", False), ("false", False), ("0", False), ("true", True), ("1", True)):
        assert train_config("sample", **parse_sets([f"augment.flip={text}"])).augment.flip is want
    from animetag.training.compile import with_plugin_settings

    cfg = with_plugin_settings(train_config("sample", **parse_sets(["model.widths=[8, 16]", "model.depths=[1,1]",
                                                                    "epochs=3.0"])))
    assert cfg.model.settings["widths"] == [8, 16] and cfg.epochs == 3 and isinstance(cfg.epochs, int)


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_ids_that_are_not_post_ids_are_malformed_records(tmp_path):
    from animetag.data.danbooru import load_posts

    good = {"id": 5, "tag_string_general": "solo", "rating": "g"}
    bad = [{"id": 99999999999999999999}, {"id": True}, {"id": 0}, {"id": -5}, {"id": "12x"}]
    df, rep = load_posts(_write_jsonl(tmp_path / "p.jsonl", [good, *bad]))
    assert df["id"].tolist() == [5]
    reasons = [m["reason"] for m in rep.malformed]
    assert len(reasons) == 5 and [m["line"] for m in rep.malformed] == [2, 3, 4, 5, 6]
    assert "99999999999999999999" in reasons[0] and "within int64" in reasons[0]
    assert "boolean" in reasons[1] and "positive" in reasons[2] and "positive" in reasons[3]


def test_comma_separated_and_spaced_tags_are_one_tag_each_with_a_warning(tmp_path):
    from animetag.data.danbooru import comma_tags_warning, load_posts

    recs = [{"id": 1, "tag_string_general": "1girl, solo, long hair", "rating": "g"},
            {"id": 2, "tag_string_general": "1girl solo", "rating": "g"},
            {"id": 3, "tags": [{"name": "long hair", "category": "0"}], "rating": "g"}]
    df, rep = load_posts(_write_jsonl(tmp_path / "p.jsonl", recs))
    assert df["tags_general"].tolist() == ["1girl solo long_hair", "1girl solo", "long_hair"]
    assert rep.comma_separated == 1 and "1 of 3 records have comma-separated" in comma_tags_warning(rep)


def test_rating_words_and_unknown_ratings(sample_root, tmp_path):
    from animetag.config import SubsetConfig
    from animetag.data.danbooru import normalise
    from animetag.data.subset import build_subset

    read = {w: normalise({"id": 1, "rating": w})["rating"] for w in ("general", "Explicit", "safe", "q", "r18")}
    assert read == {"general": "g", "Explicit": "e", "safe": "g", "q": "q", "r18": "r18"}
    lines = (sample_root / "metadata" / "posts.json").read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if i % 10 == 0:
            rec["rating"] = "nsfw" if i % 20 else "X"
        out.append(rec)
    meta = _write_jsonl(tmp_path / "posts.json", out)
    with pytest.warns(UserWarning, match="not g, s, q or e"):
        s = build_subset(meta, sample_root, tmp_path / "o", SubsetConfig(top_k=20, image_size=16, workers=1),
                         progress=False)
    w = next(x for x in s["warnings"] if "not g, s, q or e" in x)
    assert "'nsfw' 12" in w and "'x' 12" in w and "kept without a rating" in w


def _race(lock: str, barrier, q) -> None:
    barrier.wait()  # both ask at the same moment
    try:
        with folder_lock(lock, "race"):
            begin = time.monotonic()
            time.sleep(0.3)
            q.put(("held", begin, time.monotonic()))
    except FolderLocked:
        q.put(("refused", 0.0, 0.0))


@pytest.mark.slow
def test_two_commands_starting_at_once_never_both_hold_the_lock(tmp_path, monkeypatch):
    import types

    import animetag.locks as locks

    def slow(fn):  # writing the lock's content takes a while, as on a slow Drive folder
        def wrapped(*args, **kwargs):
            time.sleep(0.05)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(locks, "json", types.SimpleNamespace(dump=slow(json.dump), dumps=slow(json.dumps),
                                                             loads=json.loads))
    ctx = mp.get_context("fork")
    overlaps = 0
    for trial in range(10):
        lock = str(tmp_path / f"run{trial}.lock")
        q, barrier = ctx.Queue(), ctx.Barrier(2)
        procs = [ctx.Process(target=_race, args=(lock, barrier, q)) for _ in range(2)]
        for p in procs:
            p.start()
        results = [q.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        held = sorted((b, e) for kind, b, e in results if kind == "held")
        assert held  # one of them always gets it
        overlaps += len(held) == 2 and held[1][0] < held[0][1]  # both inside at the same time
    assert overlaps == 0


@pytest.mark.parametrize("content", ["[1, 2]", '"str"', "", '{"pid": "x", "host": "h"}'])
def test_an_unreadable_lock_is_handled_with_a_message(tmp_path, content):
    lock = tmp_path / "myrun.lock"
    lock.write_text(content)
    if content.startswith("{"):  # readable, but from another machine and fresh: held
        with pytest.raises(FolderLocked, match=f"{tmp_path / 'myrun'} is in use"):
            with folder_lock(lock, "test"):
                pass
        return
    with pytest.raises(FolderLocked, match=f"{tmp_path / 'myrun'} is in use: its lock .* is being created"):
        with folder_lock(lock, "test"):
            pass
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="unreadable"), folder_lock(lock, "test") as held:
        assert json.loads(held.read_text())["pid"] == os.getpid()


def test_a_tag_table_never_replaces_a_run_or_subset_file(subset_dir, tmp_path, capsys):
    from animetag.config import train_config
    from animetag.data.subset import read_subset
    from animetag.folders import data_signature
    from animetag.model.architecture import build_model

    tags, manifest, _ = read_subset(subset_dir)
    run = tmp_path / "run"
    run.mkdir()
    build_model(len(tags) - 4, 32, train_config("sample").model, n_ratings=4).save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"train": {}, "data": data_signature(subset_dir)}))
    tags.to_csv(run / "tags.csv", index=False)
    before = (run / "tags.csv").read_bytes()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(imgs / "a.png")
    for out in (run, subset_dir):
        code = main(["tag", "--run", str(run), str(imgs), "--format", "csv", "--out", str(out), "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2 and "folder: tags.csv there is its own" in err, err
    assert (run / "tags.csv").read_bytes() == before


@pytest.mark.parametrize("args, words", [
    (["evaluate", "--data", "d", "--run", "r", "--bootstrap", "0"], "--bootstrap: 0 is below 1"),
    (["evaluate", "--data", "d", "--run", "r", "--bootstrap", "-3"], "--bootstrap: -3 is below 1"),
    (["tag", "--run", "r", "x", "--batch-size", "0"], "--batch-size: 0 is below 1"),
    (["tag", "--run", "r", "x", "--max-tags", "-1"], "--max-tags: -1 is below 1"),
    (["tag", "--run", "r", "x", "--threshold", "7"], "--threshold: 7 is not between 0 and 1"),
    (["tag", "--run", "r", "x", "--threshold", "nan"], "--threshold: nan is not between 0 and 1"),
])
def test_command_options_are_checked(capsys, args, words):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and words in capsys.readouterr().err


def _tar(path, members: list[tuple[str, bytes]]):
    from conftest import write_tar

    return write_tar(path, members)


def test_archives_duplicates_last_wins_counted_and_a_cut_download_named(tmp_path):
    from animetag.data.image_index import ImageIndex
    from animetag.data.subset import _archive_warnings

    root = tmp_path / "images"
    _tar(root / "0000.tar", [("1.webp", b"first"), ("2.webp", b"x"), ("1.webp", b"appended again")])
    _tar(root / "0001.tar", [("2.webp", b"second archive"), ("3.webp", b"y")])
    whole = _tar(tmp_path / "whole.tar", [("4.webp", b"z" * 600), ("5.webp", b"w" * 600)]).read_bytes()
    (root / "0002.tar").write_bytes(whole[:512 + 1024 + 200])  # cut inside the second header
    (root / "folder.tar").mkdir()  # a folder named like an archive: walked as a folder
    (root / "folder.tar" / "6.png").write_bytes(b"png")
    index = ImageIndex.scan(root)
    assert index.locate(1).read() == b"appended again" and index.locate(2).read() == b"second archive"
    assert index.tars.duplicates == 2 and index.has(4) and not index.has(5) and index.has(6)
    assert index.tars.truncated == [str(root / "0002.tar")]
    warned = _archive_warnings(index)
    assert any("0002.tar ends inside a member header" in w for w in warned)
    assert any(w.startswith("2 images are in the archives twice") and "the last one is used" in w for w in warned)


def test_overwrite_removes_only_an_earlier_output_of_the_same_command(sample_root, tmp_path, capsys):
    meta = sample_root / "metadata" / "posts.json"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "model.keras").write_bytes(b"a trained model")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    for out, words in ((run, "a training run folder"), (other, "not an earlier subset")):
        code = main(["subset", "--metadata", str(meta), "--images-root", str(sample_root), "--out", str(out),
                     "--overwrite", "--profile", "sample", "--image-size", "16"])
        err = capsys.readouterr().err
        assert code == 2 and words in err, err
    assert (run / "model.keras").read_bytes() == b"a trained model" and (other / "todo.txt").exists()


def test_files_a_run_needs_are_named_when_damaged(subset_dir, tmp_path):
    from animetag.config import train_config
    from animetag.folders import RunFolder
    from animetag.model.architecture import build_model

    run = tmp_path / "run"
    run.mkdir()
    build_model(10, 32, train_config("sample").model, n_ratings=4).save(run / "model.keras")
    (run / "thresholds.json").write_text('{"global": 0.3, "per_tag"')
    with pytest.raises(ValueError, match=r"thresholds.json is not valid JSON"):
        RunFolder(run).thresholds()
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model.keras cannot be read .* cut off or damaged"):
        RunFolder(run).model  # noqa: B018


@pytest.mark.slow
def test_a_failed_export_leaves_nothing_and_an_export_inside_the_run_can_be_redone(tmp_path, monkeypatch):
    from animetag.config import train_config
    from animetag.model.architecture import build_model
    from animetag.tagging.export import export_run

    run = tmp_path / "run"
    run.mkdir()
    build_model(3, 32, train_config("sample").model, n_ratings=0).save(run / "model.keras")
    pd.DataFrame({"tag_id": range(3), "name": ["a", "b", "c"], "category": 0, "count": 1}).to_csv(
        run / "tags.csv", index=False)
    (run / "config.json").write_text("{}")

    def broken(*args, **kwargs):
        raise RuntimeError("the converter failed")

    with monkeypatch.context() as m:
        m.setattr(keras.Model, "export", broken)
        with pytest.raises(RuntimeError, match="converter failed"):
            export_run(run, run / "export", fmt="savedmodel")
    assert not (run / "export.partial").exists() and not (run / "export").exists()
    export_run(run, run / "export", fmt="savedmodel")
    export_run(run, run / "export", fmt="savedmodel", overwrite=True)  # inside the run: replaced, the run kept
    assert (run / "export" / "export.json").exists() and (run / "model.keras").exists()


def test_a_folder_holding_only_a_link_to_the_images_is_tagged(tmp_path):
    from PIL import Image

    from animetag.tagging.tagger import find_images

    real = tmp_path / "elsewhere"
    real.mkdir()
    Image.new("RGB", (8, 8)).save(real / "a.png")
    folder = tmp_path / "to_tag"
    folder.mkdir()
    (folder / "images").symlink_to(real)
    (real / "loop").symlink_to(folder)
    assert find_images([folder]) == [folder / "images" / "a.png"]


def test_evaluate_names_the_splits_it_takes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--data", "d", "--run", "r", "--split", "foo"])
    assert e.value.code == 2 and "invalid choice: 'foo' (choose from" in capsys.readouterr().err


def test_an_id_beyond_int64_is_one_malformed_record_of_a_subset_built_from_the_command_line(sample_root, tmp_path,
                                                                                              capsys):
    records = []
    for line in (sample_root / "metadata" / "posts.json").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    table = pd.DataFrame(records).astype({"id": "object"})
    table = pd.concat([table, table.iloc[[0]].assign(id="99999999999999999999")], ignore_index=True)
    table.to_csv(tmp_path / "posts.csv", index=False)
    code = main(["subset", "--metadata", str(tmp_path / "posts.csv"), "--images-root", str(sample_root),
                 "--out", str(tmp_path / "o"), "--profile", "sample", "--image-size", "16", "--workers", "1"])
    assert code == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "o" / "subset.json").read_text())
    bad = [x for x in s["left_out"] if x["reason"] == "malformed_record"]
    assert len(bad) == 1 and "99999999999999999999" in bad[0]["detail"] and bad[0]["record"].startswith("posts.csv:")
