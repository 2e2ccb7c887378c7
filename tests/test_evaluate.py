import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from animetag.metrics import (
    bootstrap_f1_ci,
    f1_at,
    precision_recall_equal_threshold,
    tune_global_threshold,
    tune_per_tag_thresholds,
)


def _data(n=400, tags=6, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, tags)) < np.linspace(0.5, 0.08, tags)).astype(np.uint8)
    s = np.clip(0.25 * y + rng.random((n, tags)) * 0.6 + shift, 0, 1)
    return y, s


def test_f1_matches_sklearn_and_a_hand_case():
    y = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 0]])
    s = np.array([[0.9, 0.6, 0.4], [0.2, 0.7, 0.8], [0.4, 0.1, 0.2]])
    # at 0.5: tag0 tp1 fn1 -> 2/3; tag1 tp1 fp1 -> 2/3; tag2 tp1 fn1 -> 2/3; micro: tp3 fp1 fn2 -> 6/9
    r = f1_at(y, s, 0.5)
    assert r["f1_micro"] == pytest.approx(6 / 9) and r["f1_macro"] == pytest.approx(2 / 3)
    y2, s2 = _data()
    for t in (0.3, 0.5, np.linspace(0.2, 0.6, 6)):
        p = s2 >= t
        r = f1_at(y2, s2, t)
        assert r["f1_micro"] == pytest.approx(f1_score(y2, p, average="micro", zero_division=0))
        assert r["f1_macro"] == pytest.approx(f1_score(y2, p, average="macro", zero_division=0))


def test_tuned_thresholds_are_the_best_on_validation_and_carry_to_new_images():
    y, s = _data(shift=-0.2)  # scores shifted low: 0.5 is far too high a threshold
    yv, sv, yt, st = y[::2], s[::2], y[1::2], s[1::2]  # tuned on one half, scored on the other
    g = tune_global_threshold(yv, sv)
    best = max(f1_at(yv, sv, t)["f1_micro"] for t in np.linspace(0.01, 0.99, 99))
    assert f1_at(yv, sv, g)["f1_micro"] >= best - 1e-9  # no threshold of a fine grid does better
    assert f1_at(yt, st, g)["f1_micro"] > f1_at(yt, st, 0.5)["f1_micro"] + 0.05  # and it carries to new images
    per = np.asarray(tune_per_tag_thresholds(yv, sv, fallback=g))
    for j in range(y.shape[1]):
        if yv[:, j].sum() == 0:
            continue
        at = f1_score(yv[:, j], sv[:, j] >= per[j], zero_division=0)
        grid = max(f1_score(yv[:, j], sv[:, j] >= t, zero_division=0) for t in np.linspace(0.01, 0.99, 99))
        assert at >= grid - 1e-9, j  # each tag's threshold is its best
    t = precision_recall_equal_threshold(y, s)
    pred = s >= t
    tp = (pred & (y == 1)).sum()
    assert abs(tp / pred.sum() - tp / y.sum()) < 0.05


def test_unlearnt_tags_keep_the_global_threshold():
    rng = np.random.default_rng(7)
    n = 2000
    y = (rng.random((n, 2)) < 0.05).astype(np.uint8)
    s = np.stack([0.5 * y[:, 0] + 0.4 * rng.random(n),  # learnt
                  0.2 * rng.random(n)], axis=1)  # noise: its best F1 is "tag every image"
    t = tune_per_tag_thresholds(y, s, fallback=0.42)
    assert t[1] == 0.42 and 0.38 <= t[0] <= 0.5
    assert tune_per_tag_thresholds(y, s, fallback=0.42, min_gain=0.0)[1] < 0.05  # the degenerate optimum


def test_threshold_tuning_never_looks_at_the_reported_split():
    from animetag.evaluation.evaluate import evaluate_scores

    y_val, s_val = _data(seed=1)
    y_test, s_test = _data(seed=2, shift=0.15)
    m1, th1 = evaluate_scores(y_val, s_val, y_test, s_test, n_boot=50)
    # scramble the test labels: thresholds must not move, metrics must
    rng = np.random.default_rng(3)
    m2, th2 = evaluate_scores(y_val, s_val, rng.permutation(y_test), s_test, n_boot=50)
    assert th1["global"] == th2["global"] and np.array_equal(th1["per_tag"], th2["per_tag"])
    assert m1["at_0.5"] != m2["at_0.5"]
    # and they are what validation alone gives
    assert th1["global"] == tune_global_threshold(y_val, s_val)
    assert m1["global_threshold"]["f1_micro"] == pytest.approx(f1_at(y_test, s_test, th1["global"])["f1_micro"])


def test_bootstrap_interval_contains_the_estimate_and_narrows():
    widths = []
    for n in (100, 1600):
        y, s = _data(n=n, seed=4)
        pred = s >= 0.5
        ci = bootstrap_f1_ci(y, pred, n_boot=400, seed=0)
        point = f1_at(y, s, 0.5)
        for k in ("f1_micro", "f1_macro"):
            assert ci[k][0] <= point[k] <= ci[k][1]
        widths.append(ci["f1_micro"][1] - ci["f1_micro"][0])
    assert widths[1] < widths[0] / 2.5  # about 1/sqrt(16) as wide


def test_like_for_like_reasons():
    from animetag.evaluation.published import THESIS, comparison_rows, like_for_like

    same = {"data": "Danbooru", "n_tags": 100, "categories": "general (top-100)", "threshold": "0.5"}
    assert like_for_like(THESIS, same) == (True, "same data, tags and threshold policy")
    ok, why = like_for_like(THESIS, {**same, "data": "sample (synthetic)", "threshold": "global (0.3)"})
    assert not ok and "different images" in why and "threshold" in why
    rows = comparison_rows([{"model": "r@0.5", **same, "f1_micro": 0.4, "f1_macro": 0.2}])
    camie = next(r for r in rows if r["model"].startswith("Camie Tagger v1 (general"))
    assert camie["like_for_like"] is False  # 70,527 tags and another threshold policy


def test_evaluate_writes_the_run_files(subset_dir, tmp_path):
    keras = pytest.importorskip("keras")
    from animetag.config import train_config
    from animetag.data.subset import read_subset
    from animetag.evaluation.evaluate import evaluate
    from animetag.model.architecture import build_model

    tags, _, _ = read_subset(subset_dir)
    run = tmp_path / "run"
    run.mkdir()
    keras.utils.set_random_seed(0)
    build_model(len(tags) - 4, 32, train_config("sample").model, n_ratings=4).save(run / "model.keras")
    with pytest.raises(ValueError, match="tuned on 'val'"):
        evaluate(subset_dir, run, split="val")
    m = evaluate(subset_dir, run, n_boot=50)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["n_tags"] == len(tags) - 4 == m["n_tags"]  # tags, not ratings
    th = json.loads((run / "thresholds.json").read_text())
    assert th["tuned_on"] == "val" and list(th["per_tag"]) == tags["name"].iloc[4:].tolist()
    # every policy's F1, recomputed from the saved test scores and the saved thresholds
    from sklearn.metrics import f1_score

    from animetag.model.policies import table

    z = np.load(run / "scores_test.npz")
    y, s = z["labels"][:, 4:], z["scores"][:, 4:]
    assert saved["n_images"] == len(y) == int((read_subset(subset_dir)[1]["split"] == "test").sum())
    for p in table():
        pred = s >= p.for_tags(th, tags["name"].iloc[4:].tolist())
        for avg in ("micro", "macro"):
            want = f1_score(y, pred, average=avg, zero_division=0)
            assert saved[p.key][f"f1_{avg}"] == pytest.approx(want, abs=1e-9), (p.key, avg)
    lo, hi = saved["ci95"]["f1_macro"]
    assert lo <= saved["per_tag_thresholds"]["f1_macro"] <= hi and saved["ci95_policy"] == "per_tag_thresholds"
    # the rating figures, recomputed from the saved scores of the rated test images
    rated = z["labels"][:, :4].sum(1) == 1
    acc = (z["labels"][rated, :4].argmax(1) == z["scores"][rated, :4].argmax(1)).mean()
    assert saved["rating"]["accuracy"] == pytest.approx(acc) and saved["rating"]["n_rated_images"] == rated.sum()
    assert np.array(saved["rating"]["confusion"]["matrix"]).sum() == rated.sum()
    assert saved["by_category"]["general"]["n_tags"] == len(tags) - 4
    assert saved["by_category"]["general"]["at_0.5"] == pytest.approx(saved["at_0.5"])  # general is all there is
    import pandas as pd

    per_tag = pd.read_csv(run / "per_tag.csv", keep_default_na=False)
    assert list(per_tag.columns[:9]) == ["tag", "category", "train_positives", "test_positives", "precision",
                                         "recall", "f1", "ap", "threshold"]
    per_tag_f1 = f1_score(y, s >= np.array(list(th["per_tag"].values())), average=None, zero_division=0)
    assert np.allclose(per_tag["f1"], per_tag_f1) and (per_tag["test_positives"] == y.sum(0)).all()
    assert (run / "scores_val.npz").exists() and (run / "scores_test.npz").exists()


def test_data_label_comes_from_what_the_subset_records(tmp_path):
    from animetag.evaluation.evaluate import data_label
    from animetag.evaluation.published import THESIS as thesis
    from animetag.evaluation.published import like_for_like

    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "sample.json").write_text("{}")
    base = {"settings": {}, "metadata": ["/d/posts.json"], "warnings": []}
    sample = data_label({**base, "images_root": str(tmp_path / "sample")})
    real = data_label({**base, "images_root": str(tmp_path)})
    flat = data_label({**base, "images_root": str(tmp_path), "warnings": ["flat tag strings ..."]})
    assert sample.startswith("sample") and "posts.json" in real and "flat-tag" in flat
    run = {"n_tags": 100, "categories": "general (top-100)", "threshold": "0.5"}
    verdicts = {label: like_for_like(thesis, {**run, "data": label})[0] for label in (sample, real, flat)}
    assert verdicts == {sample: False, real: True, flat: False}


def test_comparison_sets_published_general_rows_beside_this_runs_general_tags():
    """With characters kept, Camie's general row and the thesis are compared with this run's
    general tags alone, and the all-tag rows are not called like for like with them."""
    from animetag.evaluation.evaluate import by_category
    from animetag.evaluation.published import comparison_rows

    rng = np.random.default_rng(0)
    tags = pd.DataFrame({"name": [f"g{i}" for i in range(100)] + ["c0", "c1"], "category": [0] * 100 + [4, 4]})
    y = (rng.uniform(size=(300, 102)) < 0.2).astype(np.uint8)
    s = np.clip(y * 0.4 + rng.uniform(size=y.shape) * 0.6, 0, 1)
    th = {"global": 0.5, "precision_equals_recall": 0.5, "per_tag": np.full(102, 0.5)}
    cats = by_category(tags, y, s, th)
    assert cats["general"]["n_tags"] == 100 and cats["character"]["n_tags"] == 2
    want = f1_score(y[:, :100], s[:, :100] >= 0.5, average="micro")
    assert cats["general"]["at_0.5"]["f1_micro"] == pytest.approx(want)
    base = {"data": "Danbooru metadata", "threshold": "0.5"}
    rows = [{"model": "all", **base, "n_tags": 102, "categories": "general + character (top-102)",
             **cats["general"]["at_0.5"]},
            {"model": "general", **base, "n_tags": 100, "categories": "general (top-100)", **cats["general"]["at_0.5"]}]
    thesis = next(r for r in comparison_rows(rows) if r["model"].startswith("thesis"))
    assert thesis["compare_with"] == "general" and thesis["like_for_like"], thesis["why"]
    only_all = comparison_rows(rows[:1])
    thesis = next(r for r in only_all if r["model"].startswith("thesis"))
    assert not thesis["like_for_like"] and "categories" in thesis["why"]


def test_an_unknown_threshold_policy_is_an_error_not_a_guess():
    from animetag.evaluation.published import comparison_rows

    row = {"model": "this run @mcut", "data": "Danbooru", "n_tags": 100, "categories": "general (top-100)",
           "threshold": "MCut (per image)", "f1_micro": 0.5, "f1_macro": 0.2}
    with pytest.raises(ValueError, match="threshold policy 'MCut"):
        comparison_rows([row])
    per_tag = dict(row, model="this run @per-tag", threshold="per tag (tuned on val)")
    rows = comparison_rows([per_tag])  # a known policy that no published row uses
    assert all(r.get("compare_with") is None for r in rows if r.get("source") != "this run")


def test_paired_bootstrap_difference_is_exact_and_narrower_than_two_intervals():
    from sklearn.metrics import f1_score

    from animetag.metrics import bootstrap_f1_ci, paired_bootstrap_diff

    rng = np.random.default_rng(3)
    y = rng.uniform(size=(400, 12)) < 0.25
    hard = rng.uniform(size=y.shape) < 0.15  # mistakes both models make
    a = np.where(hard | (rng.uniform(size=y.shape) < 0.015), ~y, y)
    b = np.where(hard, ~y, y)  # b fixes a's own mistakes only
    d = paired_bootstrap_diff(y, a, b, n_boot=500)
    for avg in ("micro", "macro"):
        want = f1_score(y, b, average=avg, zero_division=0) - f1_score(y, a, average=avg, zero_division=0)
        point, lo, hi = d[f"f1_{avg}"]
        assert point == pytest.approx(want) and lo < point < hi and lo > 0  # told apart
        ca, cb = bootstrap_f1_ci(y, a, n_boot=500)[f"f1_{avg}"], bootstrap_f1_ci(y, b, n_boot=500)[f"f1_{avg}"]
        assert cb[0] < ca[1]  # the two separate intervals overlap: they could not tell
    assert paired_bootstrap_diff(y, a, a, n_boot=50) == {"f1_micro": [0.0, 0.0, 0.0], "f1_macro": [0.0, 0.0, 0.0]}
