"""`animetag compare`: foreign taggers made from the project's own export, changed the way
real ones differ (another tag order, names with spaces, tags missing and extra, no ratings or
characters, another input size, Camie v2's format), scored beside the run on the same images;
and a labelled folder with known captions."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
pytestmark = pytest.mark.slow  # trains a run and exports it

from onnx import TensorProto, helper, numpy_helper  # noqa: E402


@pytest.fixture(scope="module")
def world(sample_root, tmp_path_factory):
    """A subset with general and character tags, a run trained on it, evaluated, exported
    (and exported again taking 48 px)."""
    from animetag.tagging.export import export_run
    from conftest import evaluated_run

    root = evaluated_run(sample_root, tmp_path_factory.mktemp("compare"))
    export_run(root / "run", root / "wd48", input_size=48)
    return root


def _gathered(src, out, rows: list[int], names: list[str], categories: list[int]):
    """The export with its scores reordered / cut / repeated to `rows` and a selected_tags.csv
    naming them: a tagger with another vocabulary and order, the same scores underneath."""
    m = onnx.load(src / "model.onnx")
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array(rows, np.int64), "picked_rows"))
    g.node.append(helper.make_node("Gather", ["scores", "picked_rows"], ["picked"], axis=1))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("picked", TensorProto.FLOAT, None))
    out.mkdir()
    onnx.save(m, out / "model.onnx")
    pd.DataFrame({"tag_id": range(len(rows)), "name": names, "category": categories,
                  "count": 1}).to_csv(out / "selected_tags.csv", index=False)


def _rows(folder):
    return pd.read_csv(folder / "selected_tags.csv", keep_default_na=False)


def test_a_tagger_compared_with_itself_gives_zero_and_another_tag_order_changes_nothing(world, tmp_path, monkeypatch):
    """The run as a tagger beside itself: every difference exactly 0 (both at the run's own
    thresholds). Its export, and the export with every row reversed and spaces for
    underscores: the same results exactly (ONNX Runtime's scores against Keras': within a
    hair of the run at a fixed threshold)."""
    from animetag.evaluation.compare import compare

    wd = _rows(world / "wd")
    order = list(range(len(wd)))[::-1]  # every row reversed: the ratings last, the tags backwards
    names = [wd["name"][i].replace("_", " ") for i in order]
    _gathered(world / "wd", tmp_path / "reversed", order, names, [int(wd["category"][i]) for i in order])
    r = compare(world / "run", [f"itself={world / 'run'}", str(world / "wd"), f"backwards={tmp_path / 'reversed'}"],
                data=world / "subset", out=tmp_path / "out", n_boot=100)
    itself, export, backwards = r["taggers"]
    zero = {"f1_micro": [0.0, 0.0, 0.0], "f1_macro": [0.0, 0.0, 0.0]}
    for t in r["taggers"]:
        assert t["shared_tags"] == 25 and t["shared_by_category"] == {"general": 20, "character": 5}
    for key in r["policies"]:
        assert itself["tagger"][key]["minus_run"] == zero and itself["tagger"][key] == {
            **itself["run"][key], "minus_run": zero}
    # at a fixed threshold only the scores differ (the run's other thresholds are its own, the
    # export's tuned here)
    assert abs(export["tagger"]["at_0.5"]["minus_run"]["f1_micro"][0]) < 0.02
    assert all(c["minus_run"] == zero for c in itself["by_category"].values())
    assert itself["published"]["source"].startswith("its thresholds.json")  # tuned on the shards: not zero
    assert (export["name"], backwards["name"]) == ("wd", "backwards")
    assert export["tagger"] == backwards["tagger"] and export["by_category"] == backwards["by_category"]
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["images"]["test"] == r["images"]["test"] > 0
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert len(table) == 3 * (len(r["policies"]) + 1)  # each policy, and the published thresholds
    # run again (a stopped comparison going on): every tagger's scores are read back, not computed
    import animetag.evaluation.compare as cmp

    monkeypatch.setattr(cmp, "score_images", lambda *a, **k: pytest.fail("scored again"))
    again = cmp.compare(world / "run", [f"itself={world / 'run'}", str(world / "wd"), f"backwards={tmp_path / 'reversed'}"],
                        data=world / "subset", out=tmp_path / "out", n_boot=100)
    assert again == r


def test_a_tagger_knowing_half_the_tags_is_scored_on_that_half_and_says_so(world, tmp_path):
    """No ratings, no characters, every other general tag, and three tags the run lacks."""
    from animetag.evaluation.compare import compare, subset_images
    from animetag.folders import RunFolder, SubsetFolder
    from animetag.metrics import f1_at
    from animetag.model.policies import get, tune_all

    wd = _rows(world / "wd")
    general = [i for i in range(len(wd)) if wd["category"][i] == 0][::2]
    rows = general + general[:3]
    names = [wd["name"][i] for i in general] + ["extra_a", "extra_b", "extra_c"]
    _gathered(world / "wd", tmp_path / "half", rows, names, [0] * len(rows))
    r = compare(world / "run", [str(tmp_path / "half")], data=world / "subset", out=tmp_path / "out", n_boot=50)
    t = r["taggers"][0]
    assert t["shared_tags"] == 10 and t["of_run_tags"] == 25 and t["shared_by_category"] == {"general": 10}
    assert set(t["by_category"]) == {"general"} and len(t["run_tags_unknown_to_it"]) == 15
    # the run's row is over those 10 tags, at its own thresholds.json (as `animetag tag` applies
    # them); the tagger's at thresholds tuned on the same validation images: recomputed here
    run = RunFolder(world / "run")
    tags = run.tags[run.tags["category"] != 9]["name"].tolist()
    cols = [tags.index(n) for n in names[:10]]
    from animetag.evaluation.compare import RunTagger, score_images

    ours = RunTagger(run)
    sets = {s: subset_images(SubsetFolder(world / "subset"), s, tags) for s in ("val", "test")}
    sv, _ = score_images(sets["val"], ours.prepare, ours.scores)
    st, _ = score_images(sets["test"], ours.prepare, ours.scores)
    th = tune_all(sets["val"].y[:, cols], sv[:, cols])
    key = get("global").key
    tuned = f1_at(sets["test"].y[:, cols], st[:, cols], get("global").threshold(th))
    own = f1_at(sets["test"].y[:, cols], st[:, cols], run.thresholds()["global"])
    assert t["run"][key]["f1_macro"] == pytest.approx(own["f1_macro"])
    assert t["tagger"][key]["f1_macro"] == pytest.approx(tuned["f1_macro"])
    assert t["run"][key]["threshold"] == run.thresholds()["global"] and t["tagger"][key]["threshold"] == \
        get("global").threshold(th)


def test_another_input_size_is_read_from_the_model_and_scores_nearly_as_the_run(world, tmp_path):
    from animetag.evaluation.compare import compare
    from animetag.tagging.foreign import load_tagger

    t = load_tagger(str(world / "wd48"))
    assert t.size == 48 and t.layout == "wd"
    assert t.published_source == "selected_tags.csv's threshold column"
    import shutil

    timm = tmp_path / "timm"  # animetimm's layout: the same two files and a preprocess.json
    shutil.copytree(world / "wd48", timm)
    (timm / "preprocess.json").write_text("{}")
    with pytest.raises(ValueError, match="timm-style export"):
        load_tagger(str(timm))
    r = compare(world / "run", [str(world / "wd48")], data=world / "subset", out=tmp_path, n_boot=50)
    d = r["taggers"][0]["tagger"]["per_tag_thresholds"]["minus_run"]["f1_micro"]
    assert abs(d[0]) < 0.05  # resized twice (to 48 by the client, to 32 in the graph): close, not equal


def _camie(src, out, names, categories, size=40):
    """The export as Camie v2 ships a model: NCHW input normalised with ImageNet's mean and
    deviation, RGB; two outputs, initial and refined logits (the initial ones useless here);
    its vocabulary in camie-tagger-v2-metadata.json."""
    m = onnx.load(src / "model.onnx")
    g = m.graph
    old = g.input[0].name
    mean = np.array([0.485, 0.456, 0.406], np.float32) * 255
    std = np.array([0.229, 0.224, 0.225], np.float32) * 255
    g.initializer.extend([numpy_helper.from_array(std, "c_std"), numpy_helper.from_array(mean, "c_mean"),
                          numpy_helper.from_array(np.array([2, 1, 0], np.int64), "c_bgr"),
                          numpy_helper.from_array(np.array(1e-6, np.float32), "c_lo"),
                          numpy_helper.from_array(np.array(1 - 1e-6, np.float32), "c_hi"),
                          numpy_helper.from_array(np.array(1.0, np.float32), "c_one"),
                          numpy_helper.from_array(np.array(0.0, np.float32), "c_zero")])
    nodes = [helper.make_node("Transpose", ["input"], ["c_nhwc"], perm=[0, 2, 3, 1]),
             helper.make_node("Mul", ["c_nhwc", "c_std"], ["c_scaled"]),
             helper.make_node("Add", ["c_scaled", "c_mean"], ["c_rgb"]),
             helper.make_node("Gather", ["c_rgb", "c_bgr"], [old], axis=3)]
    nodes += [helper.make_node("Clip", ["scores", "c_lo", "c_hi"], ["c_p"]),
              helper.make_node("Sub", ["c_one", "c_p"], ["c_q"]),
              helper.make_node("Div", ["c_p", "c_q"], ["c_odds"]),
              helper.make_node("Log", ["c_odds"], ["refined"]),
              helper.make_node("Mul", ["c_odds", "c_zero"], ["initial"])]
    for n in reversed(nodes[:4]):
        g.node.insert(0, n)
    g.node.extend(nodes[4:])
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 32, 32]))
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("initial", TensorProto.FLOAT, None),
                     helper.make_tensor_value_info("refined", TensorProto.FLOAT, None)])
    out.mkdir()
    onnx.save(m, out / "camie-tagger-v2.onnx")
    meta = {"model_info": {"img_size": 32}, "dataset_info": {"total_tags": len(names), "tag_mapping": {
        "idx_to_tag": {str(i): n for i, n in enumerate(names)}, "tag_to_category": dict(zip(names, categories))}}}
    (out / "camie-tagger-v2-metadata.json").write_text(json.dumps(meta))


def test_a_camie_v2_layout_is_fed_nchw_normalised_and_read_from_its_refined_logits(world, tmp_path):
    from animetag.evaluation.compare import compare
    from animetag.tagging.foreign import load_tagger

    wd = _rows(world / "wd")
    cats = {9: "rating", 0: "general", 4: "character"}
    _camie(world / "wd", tmp_path / "camie", wd["name"].tolist(), [cats[c] for c in wd["category"]])
    t = load_tagger(str(tmp_path / "camie"))
    assert (t.layout, t.size, t.published) == ("camie", 32, None)
    im = Image.new("RGB", (64, 32), (10, 200, 30))  # landscape: grey bars above and below
    x = t.prepare(_png(im))
    assert x.shape == (3, 32, 32)
    pixels = (x.transpose(1, 2, 0) * np.array([0.229, 0.224, 0.225]) + np.array([0.485, 0.456, 0.406])) * 255
    assert np.allclose(pixels[0, 0], (124, 116, 104), atol=0.01) and np.allclose(pixels[16, 16], (10, 200, 30),
                                                                                   atol=0.01)
    import onnxruntime as ort

    wd_model = ort.InferenceSession(str(world / "wd" / "model.onnx"))
    want = wd_model.run(None, {"image": pixels[None, ..., ::-1].astype(np.float32)})[0]
    assert np.allclose(t.scores(x[None]), want, atol=1e-4)  # the refined logits, through a sigmoid
    r = compare(world / "run", [str(tmp_path / "camie")], data=world / "subset", out=tmp_path / "out", n_boot=50)
    c = r["taggers"][0]
    assert c["layout"] == "camie" and c["shared_tags"] == 25 and "published" not in c


def _png(im):
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_a_labelled_folder_with_known_captions_gives_known_f1_and_reports_foreign_tags(world, tmp_path):
    """Captions written from the subset's own tags (spaces or underscores, commas or spaces
    between tags, and a tag the run does not know): the folder's F1 is the run's F1 on those
    images at thresholds tuned on its validation split, computed here by hand; captions
    written from the run's own predictions score F1 1."""
    from animetag.evaluation.compare import RunTagger, compare, subset_images
    from animetag.folders import RunFolder, SubsetFolder
    from animetag.metrics import f1_at

    run, data = RunFolder(world / "run"), SubsetFolder(world / "subset")
    ours = RunTagger(run)
    test = subset_images(data, "test", ours.names)
    n = 10
    s = np.concatenate([ours.scores(ours.prepare(src)[None]) for src in test.sources[:n]])
    th = compare(run.path, [], data=data.path, out=tmp_path / "t", n_boot=20)["run_all_tags"]["global_threshold"][
        "threshold"]

    def folder(name, rows):
        out = tmp_path / name
        out.mkdir()
        for i, (src, row) in enumerate(zip(test.sources[:n], rows)):
            tags = [ours.names[j] for j in np.flatnonzero(row)] + ["my own tag"]
            text = ", ".join(t.replace("_", " ") for t in tags) if i % 2 else " ".join(t.replace(" ", "_") for t in tags)
            (out / f"{i}.png").write_bytes(_png(Image.open(src)))
            (out / f"{i}.txt").write_text(text)
        return out

    truth = test.y[:n]
    r = compare(run.path, [], labels=folder("truth", truth), out=tmp_path / "l1", n_boot=20)
    assert r["images"]["test"] == n and r["caption_tags_outside_the_run"] == {"my_own_tag": n}
    assert "the run's own" in r["thresholds"]
    got = r["run_all_tags"]["global_threshold"]
    assert got["threshold"] == th and got["f1_micro"] == pytest.approx(f1_at(truth, s, th)["f1_micro"])
    assert got["f1_macro"] == pytest.approx(f1_at(truth, s, th)["f1_macro"])
    pred = s >= th
    if pred.any():
        own = compare(run.path, [], labels=folder("own", pred), out=tmp_path / "l2", n_boot=20)
        assert own["run_all_tags"]["global_threshold"]["f1_micro"] == pytest.approx(1.0)


def _edited(world, out, edit):
    """The run's export with its selected_tags.csv edited (the model untouched)."""
    import shutil

    shutil.copytree(world / "wd", out)
    edit(_rows(out)).to_csv(out / "selected_tags.csv", index=False)
    return out


def test_a_tag_list_that_does_not_name_the_model_outputs_one_for_one_is_refused(world, tmp_path):
    """One row fewer, a header alone, a name twice, a category or a threshold that is not a
    number: each refused with the file and what is wrong, before any image is scored."""
    from animetag.tagging.foreign import load_tagger

    n = len(_rows(world / "wd"))
    cases = {
        "short": (lambda t: t.drop(index=3), [f"{n - 1} tags", f"{n} outputs", "selected_tags.csv"]),
        "header": (lambda t: t.iloc[:0], ["0 tags", f"{n} outputs"]),
        "twice": (lambda t: t.assign(name=[*t["name"][:5], t["name"][4], *t["name"][6:]]), ["appear twice", "rows 5 and 6"]),
        "category": (lambda t: t.assign(category=["general", *t["category"][1:]]), ["category is not a whole number",
                                                                                    "'general'"]),
        "threshold": (lambda t: t.assign(threshold=["high", *[0.4] * (len(t) - 1)]), ["threshold is not a number",
                                                                                    "'high'"]),
        "range": (lambda t: t.assign(threshold=[*[0.4] * (len(t) - 1), 35]), ["outside 0-1", f"rows {n}"]),
    }
    for name, (edit, said) in cases.items():
        folder = _edited(world, tmp_path / name, edit)
        with pytest.raises(ValueError) as e:
            load_tagger(str(folder))
        assert str(folder) in str(e.value) and all(s in str(e.value) for s in said), (name, str(e.value))
    # an intact copy loads; where a model does not declare its output width, the scores are checked
    t = load_tagger(str(_edited(world, tmp_path / "intact", lambda t: t)))
    assert len(t.names) == n
    t.names = t.names[:-1]
    with pytest.raises(ValueError, match=f"{n} outputs, but its tag list .* names {n - 1}"):
        t.scores(np.zeros((1, t.size, t.size, 3), np.float32))


def test_saved_scores_follow_the_images_and_the_model_and_a_damaged_cache_is_rebuilt(world, tmp_path):
    """A labelled folder whose pictures change under the same names is scored again (the
    F1 equals a fresh comparison's); a cache file that cannot be read is named and rebuilt."""
    import warnings

    from animetag.evaluation.compare import RunTagger, compare, subset_images
    from animetag.folders import RunFolder, SubsetFolder

    run, data = RunFolder(world / "run"), SubsetFolder(world / "subset")
    ours = RunTagger(run)
    test = subset_images(data, "test", ours.names)
    labels = tmp_path / "labels"
    labels.mkdir()
    for i, (src, row) in enumerate(zip(test.sources[:12], test.y[:12])):
        (labels / f"{i}.png").write_bytes(_png(Image.open(src)))
        (labels / f"{i}.txt").write_text(", ".join(ours.names[j] for j in np.flatnonzero(row)))
    key = "per_tag_thresholds"
    first = compare(run.path, [], labels=labels, out=tmp_path / "out", n_boot=20)["run_all_tags"][key]
    for i, src in enumerate(test.sources[12:24]):  # other pictures, the same names and captions
        (labels / f"{i}.png").write_bytes(_png(Image.open(src)))
    again = compare(run.path, [], labels=labels, out=tmp_path / "out", n_boot=20)["run_all_tags"][key]
    fresh = compare(run.path, [], labels=labels, out=tmp_path / "fresh", n_boot=20)["run_all_tags"][key]
    assert again == fresh and again["f1_micro"] != first["f1_micro"]
    damaged = next((tmp_path / "out" / "scores").glob("run-*-test.npz"))
    damaged.write_bytes(b"not a zip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = compare(run.path, [], labels=labels, out=tmp_path / "out", n_boot=20)["run_all_tags"][key]
    assert rebuilt == fresh and any(str(damaged) in str(w.message) for w in caught)


def test_tagger_names_like_a_hub_repository_or_a_path_keep_their_scores_inside_out(world, tmp_path):
    from animetag.evaluation.compare import compare

    out = tmp_path / "deep" / "out"
    r = compare(world / "run", [f"owner/repo={world / 'wd'}", f"../../evil={world / 'wd'}"], data=world / "subset",
                out=out, n_boot=20)
    assert [t["name"] for t in r["taggers"]] == ["owner/repo", "../../evil"]
    files = sorted(p.relative_to(out).as_posix() for p in tmp_path.rglob("*.npz"))
    assert len(files) == 6 and all(f.startswith("scores/") and f.count("/") == 1 for f in files), files
    assert not [p for p in (out / "scores").iterdir() if ".tmp" in p.name]  # no temporary left behind


def test_aliases_that_merge_two_of_the_run_tags_are_refused_with_the_pair(world, tmp_path):
    from animetag.evaluation.compare import compare

    with pytest.raises(ValueError, match="'1girl' and 'solo' both become '1girl'|'solo' and '1girl' both become '1girl'"):
        compare(world / "run", [str(world / "wd")], data=world / "subset", out=tmp_path / "o",
                aliases={"solo": "1girl"}, n_boot=20)
    # an alias onto a tag the run knows, from a name it does not, is what aliases are for
    r = compare(world / "run", [], data=world / "subset", out=tmp_path / "o2", aliases={"one_girl": "1girl"},
                n_boot=20)
    assert r["run_tags"] == 25


def test_captions_written_by_animetag_tag_score_one_under_its_default_policy(world, tmp_path):
    """`animetag tag` on a folder writes captions with the run's per-tag thresholds; compare
    --labels on that folder scores the run with the same thresholds: F1-micro 1."""
    from animetag.cli import main
    from animetag.evaluation.compare import RunTagger, compare, subset_images
    from animetag.folders import RunFolder, SubsetFolder

    run = RunFolder(world / "run")
    test = subset_images(SubsetFolder(world / "subset"), "test", RunTagger(run).names)
    folder = tmp_path / "mine"
    folder.mkdir()
    for i, src in enumerate(test.sources[:16]):
        (folder / f"{i}.png").write_bytes(_png(Image.open(src)))
    assert main(["tag", "--run", str(run.path), str(folder)]) == 0
    assert any((folder / f"{i}.txt").read_text().strip() for i in range(16))
    r = compare(run.path, [], labels=folder, out=tmp_path / "o", n_boot=20)
    assert r["run_all_tags"]["per_tag_thresholds"]["f1_micro"] == pytest.approx(1.0)
    assert "thresholds.json" in r["thresholds"]
