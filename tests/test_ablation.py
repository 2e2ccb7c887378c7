"""The ablation study: one budget, one policy, intervals, costs, and no variant trained twice."""

import json

import pytest

pytest.importorskip("tensorflow")

from animetag.evaluation import ablation  # noqa: E402
from animetag.evaluation.ablation import Variant, ablation_table, run_ablation  # noqa: E402


@pytest.mark.slow
def test_variants_share_a_budget_are_scored_alike_and_are_not_trained_twice(subset_dir, tmp_path, monkeypatch):
    import animetag.training.fit

    calls = []
    real_train = animetag.training.fit.train

    def counting_train(*a, **k):
        calls.append(k)
        return real_train(*a, **k)

    monkeypatch.setattr(animetag.training.fit, "train", counting_train)
    variants = [Variant("thesis"), Variant("no SE", {"model": {"backbone": "resnet"}}),
                Variant("more tags", subset="more")]
    kw = dict(subsets={"base": subset_dir, "more": subset_dir}, out=tmp_path / "ab", profile="tiny",
              epochs=1, image_size=32, policy="global", n_boot=50)
    df = run_ablation(variants, **kw)
    assert len(calls) == 3 and all(c["epochs"] == 1 and c["image_size"] == 32 for c in calls)
    assert df["variant"].tolist() == ["thesis", "no SE", "more tags"]
    assert df.loc[1, "params"] < df.loc[0, "params"]  # the SE blocks' weights are gone
    assert (df["backbone"].tolist(), df["loss"].tolist()) == (["resnet_se", "resnet", "resnet_se"], ["focal"] * 3)
    for k in ("f1_micro", "f1_macro"):
        assert ((df[f"{k}_lo"] <= df[k]) & (df[k] <= df[f"{k}_hi"])).all()
    # each row is the run's own evaluation under the policy (all tags of the base subset here)
    for _, r in df.iterrows():
        m = json.loads((tmp_path / "ab" / Variant(r["variant"]).slug / "metrics.json").read_text())
        assert r["f1_macro"] == pytest.approx(m["global_threshold"]["f1_macro"])
        assert r["train_img_s"] > 0 and r["model_mb"] > 0
    assert ablation_table(df)["note"].tolist() == ["", "", "its own subset's test images"]
    # each variant beside the first on the same test images (paired); the other subset's is not paired
    assert df.loc[0, ["delta_f1_micro", "delta_f1_micro_lo", "delta_f1_micro_hi"]].tolist() == [0.0, 0.0, 0.0]
    assert df.loc[1, "delta_f1_macro"] == pytest.approx(df.loc[1, "f1_macro"] - df.loc[0, "f1_macro"])
    assert df.loc[1, "delta_f1_macro_lo"] <= df.loc[1, "delta_f1_macro"] <= df.loc[1, "delta_f1_macro_hi"]
    assert df.loc[2, ["delta_f1_micro", "delta_f1_macro"]].isna().all()

    # run again: every row is read back, nothing is trained
    again = run_ablation(variants, **kw)
    assert len(calls) == 3 and again.equals(df)
    # another budget for one variant retrains that one alone, afresh
    variants[1] = Variant("no SE", {"model": {"backbone": "resnet"}, "epochs": 2})
    third = run_ablation(variants, **kw)
    assert len(calls) == 4 and calls[-1]["epochs"] == 2 and third.loc[1, "epochs"] == 2
    assert third.drop(index=1).equals(df.drop(index=1))


def test_an_unknown_policy_or_subset_is_refused(subset_dir, tmp_path):
    """Every registered policy has bootstrap intervals now (P=R included); a name that is
    not registered is refused before anything trains."""
    with pytest.raises(ValueError, match=r"threshold policy 'P=Q' is not one of \['0.5', 'global', 'P=R', 'per-tag'\]"):
        run_ablation([Variant("x")], {"base": subset_dir}, tmp_path, "sample", 1, policy="P=Q")
    with pytest.raises(ValueError, match=r"variant 'x': no subset named 'more' \(given: \['base'\]\)"):
        run_ablation([Variant("x", subset="more")], {"base": subset_dir}, tmp_path, "sample", 1, policy="P=R")
    assert ablation.thesis_variants(more_tags=False)[-1].changes == {
        "model": {"backbone": "efficientnetv2_b0", "weights": "imagenet"}}


def test_the_more_tags_twin_is_built_from_what_the_base_subset_records(subset_dir, tmp_path):
    import shutil

    from animetag.folders import SubsetFolder

    base = SubsetFolder(subset_dir)
    twin = SubsetFolder(ablation.more_tags_subset(subset_dir, tmp_path / "more", 60, "sample"))
    general = [n for n, c in zip(base.tags["name"], base.tags["category"]) if c == 0]
    twin_general = [n for n, c in zip(twin.tags["name"], twin.tags["category"]) if c == 0]
    assert len(general) == 40 and len(twin_general) > 40 and set(general) <= set(twin_general)
    same = ("image_size", "seed", "max_images", "val_fraction", "test_fraction", "top_k_character")
    assert {k: twin.summary["settings"][k] for k in same} == {k: base.summary["settings"][k] for k in same}
    assert twin.summary["metadata"] == base.summary["metadata"]
    with pytest.raises(ValueError, match="top_k 40 is not more than the base subset's 40"):
        ablation.more_tags_subset(subset_dir, tmp_path / "x", 40, "sample")
    moved = tmp_path / "moved"
    shutil.copytree(subset_dir, moved)
    summary = json.loads((moved / "subset.json").read_text())
    summary["metadata"] = [str(tmp_path / "gone" / "posts.json")]
    (moved / "subset.json").write_text(json.dumps(summary))
    with pytest.raises(FileNotFoundError, match=r"built from .*gone/posts.json, which is not here now.*MORE_TAGS=0"):
        ablation.more_tags_subset(moved, tmp_path / "y", 60, "sample")
