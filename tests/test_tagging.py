import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

keras = pytest.importorskip("keras")

from animetag.tagging.tagger import TagChoice, Tagger, tag_paths  # noqa: E402

NAMES = ["long_hair", "hatsune_miku", "solo", "^_^", "blue_eyes", "simple_background"]
CATS = [0, 4, 0, 0, 0, 0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small (untrained) ResNet-SE run folder with tags.csv, like a trained one."""
    from animetag.config import train_config
    from animetag.model.architecture import build_model

    run = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(0)
    build_model(len(NAMES), 32, train_config("sample").model).save(run / "model.keras")
    pd.DataFrame({"tag_id": range(len(NAMES)), "name": NAMES, "category": CATS,
                  "count": [50, 40, 30, 20, 10, 5]}).to_csv(run / "tags.csv", index=False)
    return run


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for i, (name, mode) in enumerate([("a.png", "RGB"), ("b.jpg", "RGB"), ("sub/c.webp", "RGB"), ("sub/d.png", "RGBA")]):
        arr = rng.integers(0, 255, size=(40 + 8 * i, 30, 3 if mode == "RGB" else 4), dtype=np.uint8)
        Image.fromarray(arr, mode).save(root / name)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a whole jpeg")
    return root


def test_choose_thresholds_caps_categories_and_names(run):
    t = Tagger(run)
    scores = np.array([[0.9, 0.2, 0.6, 0.7, 0.55, 0.1]])
    assert t.choose(scores, TagChoice(threshold=0.5))[0] == [
        ("long_hair", 0.9), ("^_^", 0.7), ("solo", 0.6), ("blue_eyes", 0.55)]
    assert [n for n, _ in t.choose(scores, TagChoice(threshold=0.5, max_tags=2))[0]] == ["long_hair", "^_^"]
    assert [n for n, _ in t.choose(scores, TagChoice(threshold=0.15, categories=("character",)))[0]] == ["hatsune_miku"]
    assert [n for n, _ in t.choose(scores, TagChoice(threshold=0.5, exclude_tags=("solo",)))[0]] == [
        "long_hair", "^_^", "blue_eyes"]
    spaced = [n for n, _ in t.choose(scores, TagChoice(threshold=0.5, underscores_to_spaces=True))[0]]
    assert spaced == ["long hair", "^_^", "solo", "blue eyes"]  # kaomoji keep their underscore


def test_tuned_thresholds_are_the_default(run, tmp_path):
    import shutil

    r2 = tmp_path / "run"
    shutil.copytree(run, r2)
    per = dict(zip(NAMES, [0.95, 0.1, 0.95, 0.95, 0.95, 0.95]))
    (r2 / "thresholds.json").write_text(json.dumps({"global": 0.5, "per_tag": per}))
    t = Tagger(r2)
    scores = np.array([[0.9, 0.2, 0.6, 0.7, 0.55, 0.1]])
    assert [n for n, _ in t.choose(scores)[0]] == ["hatsune_miku"]
    assert [n for n, _ in t.choose(scores, TagChoice(threshold=0.65))[0]] == ["long_hair", "^_^"]


def test_each_threshold_policy_tags_with_its_own_threshold(run, tmp_path, capsys):
    import shutil

    from animetag.cli import main

    r2 = tmp_path / "run"
    shutil.copytree(run, r2)
    scores = np.array([[0.9, 0.2, 0.6, 0.7, 0.55, 0.1]])
    with pytest.raises(FileNotFoundError, match="animetag evaluate"):  # no thresholds.json yet
        Tagger(r2).choose(scores, TagChoice(policy="global"))
    assert [n for n, _ in Tagger(r2).choose(scores)[0]] == ["long_hair", "^_^", "solo", "blue_eyes"]  # 0.5
    per = dict(zip(NAMES, [0.95, 0.1, 0.95, 0.95, 0.95, 0.95]))
    (r2 / "thresholds.json").write_text(json.dumps({"global": 0.65, "precision_equals_recall": 0.58,
                                                    "per_tag": per}))
    t = Tagger(r2)
    chosen = {p: [n for n, _ in t.choose(scores, TagChoice(policy=p))[0]] for p in ("0.5", "global", "P=R", "per-tag")}
    assert chosen == {"0.5": ["long_hair", "^_^", "solo", "blue_eyes"], "global": ["long_hair", "^_^"],
                      "P=R": ["long_hair", "^_^", "solo"], "per-tag": ["hatsune_miku"]}
    with pytest.raises(ValueError, match=r"'best' is not one of \['0.5', 'global', 'P=R', 'per-tag'\]"):
        t.choose(scores, TagChoice(policy="best"))
    # the CLI offers the same names
    with pytest.raises(SystemExit):
        main(["tag", "--run", str(r2), "--policy", "best", str(tmp_path)])
    err = capsys.readouterr().err
    assert "argument --policy: invalid choice: 'best'" in err
    assert err.split("choose from")[1].replace("'", "").strip(" )\n") == "0.5, global, P=R, per-tag"


def test_captions_follow_the_scores_and_skip_corrupt_files(run, images):
    t = Tagger(run, batch_size=2)
    files = [images / "a.png", images / "b.jpg", images / "sub/c.webp", images / "sub/d.png"]
    scores = t.predict(files)
    thr = float(np.median(scores))
    rep = tag_paths(t, [images], fmt="txt", choice=TagChoice(threshold=thr), progress=False)
    assert rep.tagged == 4 and len(rep.errors) == 1
    assert rep.errors[0]["file"].endswith("broken.jpg") and rep.errors[0]["reason"] == "corrupt_image"
    for f, row in zip(files, scores):
        caption = f.with_suffix(".txt").read_text().strip()
        want = [NAMES[j] for j in np.argsort(-row, kind="stable") if row[j] >= thr]
        assert caption == ", ".join(want), f
    assert not (images / "sub" / "broken.txt").exists()


def test_no_overwrite_without_the_flag(run, images):
    t = Tagger(run)
    (images / "a.txt").write_text("my own caption\n")
    rep = tag_paths(t, [images], fmt="txt", choice=TagChoice(threshold=0.0), progress=False)
    assert (images / "a.txt").read_text() == "my own caption\n" and rep.skipped_existing == 1
    rep = tag_paths(t, [images], fmt="txt", choice=TagChoice(threshold=0.0), overwrite=True, progress=False)
    assert (images / "a.txt").read_text().count(",") == len(NAMES) - 1 and rep.skipped_existing == 0


def test_one_table_for_all_images(run, images, tmp_path):
    t = Tagger(run)
    out = tmp_path / "out"
    tag_paths(t, [images], out=out, fmt="json", choice=TagChoice(threshold=0.0, max_tags=3), progress=False)
    data = json.loads((out / "tags.json").read_text())
    assert len(data["images"]) == 4 and all(len(r["tags"]) == 3 for r in data["images"])
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in data["images"])
    assert len(data["errors"]) == 1
    tag_paths(t, [images], out=out, fmt="csv", choice=TagChoice(threshold=0.0), progress=False)
    table = pd.read_csv(out / "tags.csv")
    assert len(table) == 4 and list(table.columns) == ["file", "rating", "rating_score", "tags", "scores"]
    assert table["rating"].isna().all()  # this model has no rating head
    with pytest.raises(FileExistsError):
        tag_paths(t, [images], out=out, fmt="csv", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_onnx_export_agrees_with_keras(run, images, tmp_path, order):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from animetag.tagging.export import export_run

    info = export_run(run, tmp_path / "export", "onnx", channel_order=order)
    out = tmp_path / "export"
    assert pd.read_csv(out / "selected_tags.csv").columns.tolist() == ["tag_id", "name", "category", "count"]
    readme = (out / "README.md").read_text()
    assert "32, 32, 3" in readme and order.upper() in readme and "0-255" in readme
    t = Tagger(run)
    files = [images / "a.png", images / "b.jpg", images / "sub/c.webp", images / "sub/d.png"]
    x = t.preprocess(files)
    sess = ort.InferenceSession(info["model"], providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.shape[1:] == [32, 32, 3] and not isinstance(inp.shape[0], int)  # dynamic batch
    feed = x[..., ::-1].copy() if order == "bgr" else x
    got = np.concatenate([sess.run(None, {inp.name: feed[:3]})[0], sess.run(None, {inp.name: feed[3:]})[0]])
    assert np.abs(got - t.predict(files)).max() < 1e-4
    with pytest.raises(FileExistsError):
        export_run(run, out, "onnx")


@pytest.fixture(scope="module")
def rated_run(tmp_path_factory):
    """A run whose model has the rating head: tags.csv starts with the four rating rows."""
    from animetag.config import train_config
    from animetag.model.architecture import build_model
    from animetag.vocab import rating_rows

    run = tmp_path_factory.mktemp("rated")
    keras.utils.set_random_seed(1)
    build_model(len(NAMES), 32, train_config("sample").model, n_ratings=4).save(run / "model.keras")
    tags = pd.DataFrame({"tag_id": range(len(NAMES)), "name": NAMES, "category": CATS,
                         "count": [50, 40, 30, 20, 10, 5]})
    pd.concat([rating_rows({"g": 3, "s": 2, "q": 1, "e": 1}), tags]).to_csv(run / "tags.csv", index=False)
    return run


def test_rating_is_the_highest_rating_score_and_opens_the_caption_when_asked(rated_run, images, tmp_path):
    t = Tagger(rated_run)
    assert t.n_ratings == 4 and t.names == NAMES
    files = [images / "a.png", images / "b.jpg"]
    scores = t.predict(files)
    assert scores.shape == (2, 4 + len(NAMES))
    ratings = t.rating(scores)
    for row, (name, score) in zip(scores, ratings):
        assert name == ["general", "sensitive", "questionable", "explicit"][int(row[:4].argmax())]
        assert score == pytest.approx(float(row[:4].max()))
    out = tmp_path / "captions"
    tag_paths(t, files, out=out, choice=TagChoice(threshold=0.0, rating=True), progress=False)
    first = (out / "a.txt").read_text().strip().split(", ")
    assert first[0] == ratings[0][0] and sorted(first[1:]) == sorted(NAMES)  # rating, then every tag
    tag_paths(t, files, out=out, choice=TagChoice(threshold=0.0), overwrite=True, progress=False)
    assert sorted((out / "a.txt").read_text().strip().split(", ")) == sorted(NAMES)  # off by default
    tag_paths(t, files, out=out, fmt="json", choice=TagChoice(threshold=0.0), progress=False)
    rows = json.loads((out / "tags.json").read_text())["images"]
    assert [r["rating"] for r in rows] == [r for r, _ in ratings]


def test_images_that_would_share_a_caption_are_refused_before_tagging(run, tmp_path):
    from animetag.cli import main

    rng = np.random.default_rng(0)
    for f in ("A/x.jpg", "B/x.jpg", "C/a.jpg", "C/a.png"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f)
    t = Tagger(run)
    with pytest.raises(ValueError, match=r"C/a.jpg and .*C/a.png"):
        tag_paths(t, [tmp_path / "C"], progress=False)  # beside the images: a.txt twice
    assert not (tmp_path / "C" / "a.txt").exists()
    with pytest.raises(ValueError, match=r"A/x.jpg and .*B/x.jpg"):
        tag_paths(t, [tmp_path / "A", tmp_path / "B"], out=tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").glob("*.txt"))
    # the two folders beside their images are fine: each caption has its own folder
    rep = tag_paths(t, [tmp_path / "A", tmp_path / "B"], progress=False)
    assert rep.tagged == 2 and (tmp_path / "A" / "x.txt").exists() and (tmp_path / "B" / "x.txt").exists()
    assert main(["tag", "--run", str(run), str(tmp_path / "C")]) == 2


@pytest.fixture()
def read_only_dir(tmp_path):
    """A folder no file can be written into (as root, where permissions do not bind: /sys)."""
    import tempfile

    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    for candidate in (d, Path("/sys")):
        try:
            with tempfile.NamedTemporaryFile(dir=candidate):
                pass
        except OSError:
            yield candidate
            break
    else:
        pytest.skip("no read-only folder available here")
    d.chmod(0o755)


def test_unwritable_or_missing_output_fails_before_any_image_is_tagged(run, images, read_only_dir, tmp_path,
                                                                       monkeypatch, capsys):
    from animetag.cli import main
    from animetag.tagging.tagger import Tagger as T

    calls = []
    monkeypatch.setattr(T, "load_readable", lambda self, files: calls.append(files))
    t = Tagger(run)
    for fmt in ("txt", "csv"):
        with pytest.raises(PermissionError, match=str(read_only_dir)):
            tag_paths(t, [images], out=read_only_dir, fmt=fmt, progress=False)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            tag_paths(t, [images], out=tmp_path / "no" / "such" / "folder", fmt=fmt, progress=False)
    assert calls == []  # nothing was decoded, let alone tagged
    assert main(["tag", "--run", str(run), str(images), "--out", str(read_only_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not writable" in err[0] and "Traceback" not in err[0]


def test_exit_status_says_whether_anything_was_tagged(run, tmp_path, capsys):
    from animetag.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"not an image")
    (bad / "y.png").write_bytes(b"")
    assert main(["tag", "--run", str(run), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "2 images found: 0 tagged" in err and "2 unreadable" in err
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(bad / "z.png")
    assert main(["tag", "--run", str(run), str(bad)]) == 1  # one tagged, two unreadable
    assert (bad / "z.txt").exists()
    (bad / "x.jpg").unlink()
    (bad / "y.png").unlink()
    assert main(["tag", "--run", str(run), str(bad), "--overwrite"]) == 0
