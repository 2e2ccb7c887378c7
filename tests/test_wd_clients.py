"""The export read by a real WD-tagger client: dghs-imgutils' `get_wd14_tags`, run in its own
environment (`make test` builds it; set ANIMETAG_WD_CLIENT_PYTHON to its python to run
this file alone). Only imgutils' download function is pointed at the export folder."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.slow  # exports and runs a client (seconds each)
pytest.importorskip("tf2onnx")

from animetag.tagging.tagger import TagChoice, Tagger  # noqa: E402

CLIENT = os.environ.get("ANIMETAG_WD_CLIENT_PYTHON")
SCRIPT = Path(__file__).parent / "clients" / "imgutils_wd14.py"
GENERAL = ["solo", "1girl", "long_hair", "breasts", "smile", "skirt"]
CHARACTERS = ["hatsune_miku", "hakurei_reimu"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """An export with rating, general and character rows and tuned thresholds."""
    from animetag.config import train_config
    from animetag.model.architecture import build_model
    from animetag.tagging.export import export_run
    from animetag.vocab import rating_rows

    run = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(3)
    build_model(len(GENERAL) + len(CHARACTERS), 48, train_config("sample").model, n_ratings=4).save(
        run / "model.keras")
    tags = pd.DataFrame({"tag_id": range(8), "name": GENERAL + CHARACTERS, "category": [0] * 6 + [4] * 2,
                         "count": [90, 80, 70, 60, 50, 40, 30, 20]})
    pd.concat([rating_rows({"g": 5, "s": 4, "q": 2, "e": 1}), tags]).to_csv(run / "tags.csv", index=False)
    per = {n: 0.3 + 0.05 * i for i, n in enumerate(GENERAL + CHARACTERS)}
    (run / "thresholds.json").write_text(json.dumps({"global": 0.4, "precision_equals_recall": 0.45,
                                                     "per_tag": per}))
    out = tmp_path_factory.mktemp("export") / "wd"
    export_run(run, out, "onnx")
    return run, out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real-looking pictures: detailed sample drawings as JPEGs from 300 to 900 px, in
    portrait and landscape, and a PNG with transparency."""
    from animetag.data.sample import add_detail

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    files = []
    for i, (w, h) in enumerate([(900, 600), (512, 768), (640, 640), (333, 500), (800, 450)]):
        base = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        img = add_detail(base, rng)
        f = root / f"photo{i}.jpg"
        img.save(f, quality=88)
        files.append(f)
    rgba = np.dstack([rng.integers(0, 255, (300, 200, 3)), np.linspace(0, 255, 200)[None, :].repeat(300, 0)])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(root / "cutout.png")
    return files + [root / "cutout.png"]


def _imgutils(export: Path, general: float, character: float, files, tmp_path) -> tuple[list[dict], list]:
    if not CLIENT:
        pytest.skip("no WD-client environment: `make test` builds it (ANIMETAG_WD_CLIENT_PYTHON)")
    pixels = tmp_path / f"pixels_{general}_{character}.npz"
    out = subprocess.run([CLIENT, str(SCRIPT), str(export), str(general), str(character), str(pixels),
                          *map(str, files)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    z = np.load(pixels)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")], \
        [z[f"arr_{i}"] for i in range(len(files))]


def test_export_has_wd_rows_two_outputs_and_thresholds_inside(export):
    import onnxruntime as ort

    run, out = export
    table = pd.read_csv(out / "selected_tags.csv")
    assert table.columns.tolist()[:4] == ["tag_id", "name", "category", "count"]
    assert table["category"].tolist() == [9] * 4 + [0] * 6 + [4] * 2  # WD order: ratings, general, characters
    assert table["name"].tolist()[:4] == ["general", "sensitive", "questionable", "explicit"]
    saved = json.loads((run / "thresholds.json").read_text())
    assert table["threshold"].iloc[:4].isna().all()
    assert np.allclose(table["threshold"].iloc[4:], [saved["per_tag"][n] for n in GENERAL + CHARACTERS])
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["scores", "embedding"]
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["thresholds"]) == saved
    x = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 3)).astype(np.float32)
    scores, emb = sess.run(None, {sess.get_inputs()[0].name: x})
    assert scores.shape == (3, 12) and emb.shape[0] == 3 and emb.ndim == 2
    assert np.allclose(scores[:, :4].sum(1), 1.0, atol=1e-5)  # one rating per image
    keras_scores = Tagger(run).scores(x[..., ::-1].copy())  # the export takes BGR
    assert np.abs(scores - keras_scores).max() < 1e-4


def test_imgutils_tags_equal_animetag_tags(export, photos, tmp_path):
    run, out = export
    tagger = Tagger(run)
    good, x, errors = tagger.load_readable(photos)
    assert not errors
    scores = tagger.scores(x)
    # every score first (thresholds below zero): the full vectors and imgutils' own pixels
    full, pixels = _imgutils(out, -1.0, -1.0, photos, tmp_path)
    for i, (row, px) in enumerate(zip(full, pixels)):
        assert np.abs(px[..., ::-1] - x[i]).max() <= 1.0, photos[i]  # the same preprocessing, to rounding
        theirs = np.array([row["rating"][n] for n in tagger.rating_names]
                          + [row["general"][n] for n in GENERAL] + [row["character"][n] for n in CHARACTERS])
        gap = np.abs(theirs - scores[i]).max()
        print(f"{photos[i].name}: largest score difference imgutils vs animetag {gap:.2e}")
        assert gap < 0.02
    # thresholds that fall between scores, so the tag sets are decided by the scores alone
    def between(values):
        v = np.sort(np.unique(np.round(values, 4)))
        k = int(np.argmax(np.diff(v[len(v) // 4: 3 * len(v) // 4]))) + len(v) // 4
        return float((v[k] + v[k + 1]) / 2)

    g = between(scores[:, 4:10].ravel())
    c = between(scores[:, 10:].ravel())
    chosen, _ = _imgutils(out, g, c, photos, tmp_path)
    ours_g = tagger.choose(scores, TagChoice(threshold=g, categories=("general",)))
    ours_c = tagger.choose(scores, TagChoice(threshold=c, categories=("character",)))
    for i, row in enumerate(chosen):
        assert max(row["rating"], key=row["rating"].get) == tagger.rating(scores[i])[0][0]
        assert set(row["general"]) == {t for t, _ in ours_g[i]}
        assert set(row["character"]) == {t for t, _ in ours_c[i]}
    assert any(ours_g) and not all(len(o) == 6 for o in ours_g)  # the threshold separates something


def test_a_model_without_characters_gets_one_zero_character_row(tmp_path, photos):
    """ComfyUI's WD14 node reads every row from the first category-4 row on as a character,
    and without one takes all rows for characters: the export adds one placeholder scored 0."""
    import onnxruntime as ort

    from animetag.config import train_config
    from animetag.model.architecture import build_model
    from animetag.tagging.export import export_run
    from animetag.vocab import rating_rows

    run = tmp_path / "run"
    run.mkdir()
    keras.utils.set_random_seed(4)
    build_model(len(GENERAL), 48, train_config("sample").model, n_ratings=4).save(run / "model.keras")
    tags = pd.DataFrame({"tag_id": range(6), "name": GENERAL, "category": 0, "count": [6, 5, 4, 3, 2, 1]})
    pd.concat([rating_rows({"g": 1}), tags]).to_csv(run / "tags.csv", index=False)
    export_run(run, tmp_path / "wd", "onnx")
    table = pd.read_csv(tmp_path / "wd" / "selected_tags.csv")
    assert table["category"].tolist() == [9] * 4 + [0] * 6 + [4]
    sess = ort.InferenceSession(str(tmp_path / "wd" / "model.onnx"), providers=["CPUExecutionProvider"])
    tagger = Tagger(run)
    _, x, _ = tagger.load_readable(photos)
    scores = sess.run(None, {sess.get_inputs()[0].name: x[..., ::-1].copy()})[0]
    assert scores.shape == (len(photos), 11) and (scores[:, -1] == 0).all()
    assert np.abs(scores[:, :10] - tagger.scores(x)).max() < 1e-4
    chosen, _ = _imgutils(tmp_path / "wd", 0.5, 0.0, photos, tmp_path)
    assert all(row["character"] == {} for row in chosen)  # the placeholder passes no threshold


def _as_kohya_feeds(path: Path, side: int = 448) -> np.ndarray:
    """An image as kohya's `tag_images_by_wd14_tagger.py` prepares it: RGB, padded to a
    square with white (the image centred), resized to 448 with OpenCV's area filter (here
    Pillow's BOX filter: the same area average for a shrink, without OpenCV), float32, BGR."""
    a = np.asarray(Image.open(path).convert("RGB"))
    size = max(a.shape[:2])
    pad_x, pad_y = size - a.shape[1], size - a.shape[0]
    a = np.pad(a, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0)),
               mode="constant", constant_values=255)
    assert size > side  # the area filter, as kohya's script picks for a shrink
    a = np.asarray(Image.fromarray(a).resize((side, side), Image.Resampling.BOX)).astype(np.float32)
    return a[:, :, ::-1]


def test_a_448_export_fed_as_kohyas_script_feeds_it_agrees_with_animetag_tag(export, photos, tmp_path):
    """kohya's script fixes IMAGE_SIZE = 448; `--input-size 448` takes it and resizes to the
    training size inside. Its scores on kohya's input agree with `animetag tag` on the same
    files within the tolerance the export's README states (0.05)."""
    ort = pytest.importorskip("onnxruntime")
    from animetag.cli import main

    run, _ = export
    out = tmp_path / "kohya"
    assert main(["export", "--run", str(run), "--out", str(out), "--input-size", "448"]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["image_size"] == 448 and info["model_image_size"] == 48
    readme = (out / "README.md").read_text()
    assert "within 0.05" in readme
    # what it says of sizes: this file takes 448; `animetag tag` resizes to the training size
    assert "to 448x448 for this file" in readme and "`animetag tag` itself resizes to 48x48" in readme
    assert "to 448x448, with" not in readme  # the old wording, wrong for `animetag tag`
    # and of kohya's script: its crash and the way round it
    assert "UnboundLocalError" in readme and "--character_threshold 1.01" in readme
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [448, 448, 3]
    jpegs = [f for f in photos if f.suffix == ".jpg"]  # kohya drops alpha instead of compositing it: not compared
    got = sess.run(None, {sess.get_inputs()[0].name: np.stack([_as_kohya_feeds(f) for f in jpegs])})[0]
    want = Tagger(run).scores(Tagger(run).load_readable(jpegs)[1])
    gap = float(np.abs(got - want).max())
    print(f"448 export fed as kohya's script feeds it vs animetag tag: largest score difference {gap:.4f}")
    assert gap < 0.05, gap
    # an image already at 448 is resized in the graph exactly as Pillow resizes it for `animetag tag`
    square = np.asarray(Image.open(jpegs[2]).convert("RGB").resize((448, 448), Image.Resampling.BICUBIC))
    small = np.asarray(Image.fromarray(square).resize((48, 48), Image.Resampling.BICUBIC), np.float32)
    direct = Tagger(run).scores(small[None])
    graph = sess.run(None, {sess.get_inputs()[0].name: square[None, :, :, ::-1].astype(np.float32)})[0]
    assert np.abs(graph - direct).max() < 2e-3, np.abs(graph - direct).max()
