import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animetag.config import SubsetConfig
from animetag.data.sample import BROKEN, all_general_tags, generate
from animetag.data.subset import build_subset, label_matrix, read_subset


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generator_is_deterministic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, 60, seed=3)
    generate(b, 60, seed=3)
    generate(c, 60, seed=4)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_sample_has_the_promised_shape(sample_root):
    desc = json.loads((sample_root / "sample.json").read_text())
    lines = (sample_root / "metadata" / "posts.json").read_text().splitlines()
    recs = []
    for line in lines:
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    assert len(recs) == len(lines) - 1  # one malformed line
    tags = {t for r in recs for t in r["tag_string"].split()}
    assert len(set(all_general_tags())) >= 120
    assert len(tags) >= 150
    # real-shape fields, messy values included
    assert any(isinstance(r["id"], float) for r in recs) and any(isinstance(r["image_width"], str) for r in recs)
    # the pseudo-hierarchy: a character's hair colour and copyright are tagged (unless dropped as missing)
    miku = [r for r in recs if r["tag_string_character"] == "hatsune_miku"]
    assert miku and all(r["tag_string_copyright"] == "idolmaster" for r in miku)
    truth = {json.loads(x)["id"]: set(json.loads(x)["general"]) for x in (sample_root / "truth.jsonl").read_text().splitlines()}
    assert all("blue_hair" in truth[int(r["id"])] for r in miku)
    # missing tags at about the documented rate
    meta = {int(r["id"]): set(r["tag_string_general"].split()) for r in recs if r["tag_string_general"]}
    n_true = sum(len(truth[i]) for i in meta)
    n_kept = sum(len(meta[i] & truth[i]) for i in meta)
    assert 0.05 < 1 - n_kept / n_true < 0.15
    assert set(desc["broken_records"]) >= set(BROKEN)
    # overlap: very_long_hair always comes with long_hair in the truth
    assert all("long_hair" in t for t in truth.values() if "very_long_hair" in t)


def test_subset_invariants(subset_dir, sample_root):
    tags, manifest, summary = read_subset(subset_dir)
    assert list(tags.columns) == ["tag_id", "name", "category", "count"]
    assert len(tags) == 4 + 40 and (tags["category"] == [9] * 4 + [0] * 40).all()  # ratings, then the top-40
    # no md5 and no id in two splits; every kept image has a kept tag
    assert manifest.groupby("md5")["split"].nunique().max() == 1
    assert manifest["id"].is_unique
    Y = label_matrix(manifest, tags)
    assert (Y.sum(1) >= 1).all()
    # per-tag split proportions near 80/10/10, much nearer than a random split gets
    split = manifest["split"].to_numpy()
    common = Y.sum(0) >= 10

    def deviation(sp):
        return np.mean([np.abs(Y[sp == s].sum(0)[common] / Y.sum(0)[common] - f).mean()
                        for s, f in (("train", 0.8), ("val", 0.1), ("test", 0.1))])

    rng = np.random.default_rng(0)
    rand = [deviation(rng.choice(["train", "val", "test"], len(Y), p=[0.8, 0.1, 0.1])) for _ in range(20)]
    assert deviation(split) < 0.6 * np.median(rand), (deviation(split), np.median(rand))
    for s in ("train", "val", "test"):
        assert (Y[split == s].sum(0)[Y.sum(0) >= 20] > 0).all(), s
    # every record left out has a reason, and each broken record got the expected one
    left = summary["left_out"]
    assert all(x.get("reason") for x in left)
    desc = json.loads((sample_root / "sample.json").read_text())
    by_id = {x.get("id"): x["reason"] for x in left}
    for kind, want in BROKEN.items():
        if kind == "malformed_json":
            assert any(x["reason"] == "malformed_record" for x in left)
        else:
            assert by_id.get(desc["broken_records"][kind]["id"]) == want, kind
    # odd image modes are kept (converted), not dropped
    for kind in ("mode_CMYK", "mode_L", "mode_P", "mode_RGBA", "mode_GIF"):
        assert desc["broken_records"][kind]["id"] in set(manifest["id"]), kind
    # every metadata record is accounted for: kept + left out == read
    assert summary["metadata"] == [str(sample_root / "metadata" / "posts.json")]
    assert summary["images_root"] == str(sample_root)
    c = summary["counts"]
    assert c["kept"] + len(left) + c["not_selected"] == c["records_read"]
    assert c["kept"] == len(manifest) == c["train"] + c["val"] + c["test"]


def test_shards_hold_the_manifest(subset_dir):
    from animetag.data.shards import peek

    tags, manifest, _ = read_subset(subset_dir)
    ids, images, labels = peek(subset_dir, "val", 1000)
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    val = manifest[manifest["split"] == "val"].set_index("id")
    assert sorted(ids.tolist()) == sorted(val.index.tolist())
    Y = label_matrix(val.loc[ids].reset_index(), tags)
    assert (Y == labels).all()


def test_max_images_and_vocabulary_options(sample_root, tmp_path):
    cfg = SubsetConfig(top_k=150, max_images=50, image_size=16, categories=("general", "character"),
                       exclude_tags=("solo",), ratings=("g", "s"), workers=1)
    s = build_subset(sample_root / "metadata" / "posts.json", sample_root, tmp_path / "o", cfg, progress=False)
    tags, manifest, _ = read_subset(tmp_path / "o")
    assert len(manifest) == 50 and s["counts"]["not_selected"] > 0
    assert "solo" not in set(tags["name"]) and "1girl" in set(tags["name"])
    assert set(tags["category"]) == {9, 0, 4}  # ratings, general and character tags
    assert "rating" in {x["reason"] for x in s["left_out"]}


def test_interrupted_build_never_looks_complete(sample_root, tmp_path, monkeypatch):
    import animetag.data.subset as sub

    out = tmp_path / "o"
    cfg = SubsetConfig(top_k=20, image_size=16, workers=1)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sub, "stratified_split", boom)
    with pytest.raises(KeyboardInterrupt):
        build_subset(sample_root / "metadata" / "posts.json", sample_root, out, cfg, progress=False)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="interrupted"):
        read_subset(out)
    chunks = list((tmp_path / "o.partial" / "decoded").glob("chunk-*.pkl"))
    assert chunks  # decoded work kept for the rerun
    monkeypatch.undo()
    # the rerun resumes from the decoded chunks: the pool is never asked to decode again
    calls = []
    real = sub.prepare_for_shard
    monkeypatch.setattr(sub, "prepare_for_shard", lambda a: calls.append(a) or real(a))
    build_subset(sample_root / "metadata" / "posts.json", sample_root, out, cfg, progress=False)
    assert (out / "subset.json").exists() and not (tmp_path / "o.partial").exists()
    with pytest.raises(FileExistsError):
        build_subset(sample_root / "metadata" / "posts.json", sample_root, out, cfg, progress=False)


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA", "I;16", "GIF"])
def test_odd_modes_become_rgb_on_white(tmp_path, mode):
    from animetag.data.images import open_rgb_square

    base = Image.new("RGB", (40, 20), (255, 0, 0))
    p = tmp_path / "x.png"
    if mode == "RGBA":
        im = Image.new("RGBA", (40, 20), (255, 0, 0, 0))  # fully transparent red
        im.save(p)
    elif mode == "LA":
        Image.new("LA", (40, 20), (0, 0)).save(p)
    elif mode == "I;16":
        Image.fromarray(np.full((20, 40), 1000, np.uint16)).save(p)
    elif mode == "GIF":
        p = tmp_path / "x.gif"
        base.save(p, save_all=True, append_images=[Image.new("RGB", (40, 20), (0, 0, 255))])
    elif mode == "CMYK":
        p = tmp_path / "x.jpg"
        base.convert("CMYK").save(p)
    else:
        base.convert(mode).save(p)
    out = np.asarray(open_rgb_square(p, 16))
    assert out.shape == (16, 16, 3)
    top, mid = out[0, 8], out[8, 8]
    assert (top > 245).all()  # padding is white
    if mode in ("RGBA", "LA"):
        assert (mid > 245).all()  # transparency onto white, not black
    elif mode == "GIF":
        assert mid[0] > 200 and mid[2] < 60  # the first frame (red), not the second
    elif mode in ("L", "I;16"):
        assert abs(int(mid[0]) - int(mid[1])) < 3
    else:
        assert mid[0] > 200 and mid[1] < 60


def test_too_large_is_refused_before_decoding(tmp_path):
    from animetag.data.images import ImageError, open_rgb_square

    p = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(p)
    with pytest.raises(ImageError) as e:
        open_rgb_square(p, 16, max_pixels=10_000)
    assert e.value.reason == "too_large"
    p2 = tmp_path / "junk.jpg"
    p2.write_bytes(b"not an image at all")
    with pytest.raises(ImageError) as e:
        open_rgb_square(p2, 16)
    assert e.value.reason == "not_an_image"


def test_a_failed_build_is_not_reused_once_the_images_are_there(sample_root, tmp_path):
    import shutil

    root = tmp_path / "s"
    shutil.copytree(sample_root, root)
    held = tmp_path / "held"
    held.mkdir()
    for folder in ("512px", "original"):  # the images are not there yet
        shutil.move(str(root / folder), str(held / folder))
    cfg = SubsetConfig(top_k=20, image_size=16, workers=1)
    meta = root / "metadata" / "posts.json"
    with pytest.raises(ValueError, match=r"only 0 images could be used.*missing_file 2\d\d.*looked for under"):
        build_subset(meta, root, tmp_path / "o", cfg, progress=False)
    assert not list((tmp_path / "o.partial" / "decoded").glob("chunk-*.pkl"))  # nothing here to decode
    for folder in ("512px", "original"):
        shutil.move(str(held / folder), str(root / folder))
    s = build_subset(meta, root, tmp_path / "o", cfg, progress=False)  # the same command again
    assert s["counts"]["kept"] > 200
    missing = [x for x in s["left_out"] if x["reason"] == "missing_file"]
    assert len(missing) == 1  # only the sample's one deliberately missing file


@pytest.mark.parametrize("max_images", [10, 15])
def test_too_few_images_for_three_splits_is_one_clear_error(sample_root, tmp_path, max_images):
    cfg = SubsetConfig(top_k=20, image_size=16, workers=1, max_images=max_images)
    with pytest.raises(ValueError, match=rf"only {max_images} images could be used, fewer than the 20 needed"):
        build_subset(sample_root / "metadata" / "posts.json", sample_root, tmp_path / "o", cfg, progress=False)
    assert not (tmp_path / "o").exists()


def test_flat_tag_metadata_warns_in_the_subset_and_a_tag_table_fixes_it(sample_root, tmp_path):
    import json

    flat = []
    cats = {}
    for line in (sample_root / "metadata" / "posts.json").read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        for c, cid in (("general", 0), ("character", 4), ("copyright", 3), ("artist", 1), ("meta", 5)):
            for t in r.pop(f"tag_string_{c}", "").split():
                cats[t] = cid
        flat.append(json.dumps(r))  # only the flat tag_string is left, as Moebooru gives
    meta = tmp_path / "flat.jsonl"
    meta.write_text("\n".join(flat))
    cfg = SubsetConfig(top_k=60, image_size=16, workers=1)
    with pytest.warns(UserWarning, match="flat tag string"):
        s = build_subset(meta, sample_root, tmp_path / "a", cfg, progress=False)
    assert s["warnings"] and "--tag-table" in s["warnings"][0]
    leaked = {t for t in read_subset(tmp_path / "a")[0]["name"] if cats.get(t, 0) != 0}
    assert leaked  # characters and copyrights in the general vocabulary: what the warning says
    table = tmp_path / "tags.csv"
    table.write_text("name,category\n" + "\n".join(f"{t},{c}" for t, c in cats.items()))
    s = build_subset(meta, sample_root, tmp_path / "b", SubsetConfig(top_k=60, image_size=16, workers=1,
                                                                      tag_table=str(table)), progress=False)
    assert not [w for w in s["warnings"] if "--tag-table" in w]
    assert all(cats.get(t, 0) == 0 for t in read_subset(tmp_path / "b")[0]["name"])


def test_outputs_follow_the_wd_order_ratings_general_characters(sample_root, tmp_path):
    import pandas as pd

    cfg = SubsetConfig(top_k=20, top_k_character=5, image_size=16, workers=1)
    s = build_subset(sample_root / "metadata" / "posts.json", sample_root, tmp_path / "o", cfg, progress=False)
    tags, manifest, _ = read_subset(tmp_path / "o")
    assert tags["name"].tolist()[:4] == ["general", "sensitive", "questionable", "explicit"]
    assert tags["category"].tolist() == [9] * 4 + [0] * 20 + [4] * 5
    for cat in (0, 4):  # most common first within each category
        counts = tags.loc[tags["category"] == cat, "count"].tolist()
        assert counts == sorted(counts, reverse=True)
    records = []
    for line in (sample_root / "metadata" / "posts.json").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the sample's malformed record
    posts = pd.DataFrame(records).drop_duplicates("id").set_index("id")
    # the five characters are the most common characters of the metadata
    chars = posts["tag_string_character"].fillna("").str.split().explode()
    top = chars[chars != ""].value_counts()
    assert set(tags["name"].iloc[24:]) <= set(top.index[:7]) and tags["name"].iloc[24] == top.index[0]
    # labels: one rating per image, from the metadata; characters from the character field
    Y = label_matrix(manifest, tags)
    assert (Y[:, :4].sum(1) == 1).all()
    names = tags["name"].tolist()
    for i, row in manifest.sample(40, random_state=0).iterrows():
        post = posts.loc[row["id"]]
        assert names[int(Y[i, :4].argmax())][0] == post["rating"]
        want = {t for t in str(post["tag_string_character"] or "").split() if t in names[24:]}
        assert {names[j] for j in np.flatnonzero(Y[i, 24:]) + 24} == want
    assert s["n_tags"] == 25 and s["n_ratings"] == 4 and s["ratings"]["scheme"] == "current"


def test_legacy_ratings_map_safe_to_general_and_unrated_posts_are_kept(sample_root, tmp_path):
    """Before 2022 Danbooru rated s(afe)/q/e; a post without a rating stays, without a rating label."""
    import pandas as pd

    lines = (sample_root / "metadata" / "posts.json").read_text().splitlines()
    records, want = [], {}
    for k, line in enumerate(lines):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r["rating"] == "s":
            r["rating"] = "q"  # the old scheme had no "sensitive"
        if r["rating"] == "g":
            r["rating"] = "s"  # old "safe"
        if k % 7 == 0:
            r["rating"] = None
        want[r["id"]] = {"s": "g", "q": "q", "e": "e", None: ""}[r["rating"]]
        records.append(json.dumps(r))
    meta = tmp_path / "legacy.json"
    meta.write_text("\n".join(records) + "\n")
    s = build_subset(meta, sample_root, tmp_path / "o", SubsetConfig(top_k=20, image_size=16, workers=1),
                     progress=False)
    tags, manifest, _ = read_subset(tmp_path / "o")
    assert s["ratings"]["scheme"] == "legacy" and s["ratings"]["mapping"]["s"] == "g"
    assert manifest["rating"].tolist() == [want[i] for i in manifest["id"]]
    unrated = manifest["rating"].to_numpy() == ""
    assert unrated.sum() > 5 and "rating" not in {x["reason"] for x in s["left_out"]}
    Y = label_matrix(manifest, tags)
    assert (Y[unrated, :4] == 0).all() and (Y[~unrated, :4].sum(1) == 1).all()
    assert tags.loc[:3, "count"].tolist()[1] == 0  # nothing is "sensitive" in the old scheme
    assert pd.Series(manifest["rating"]).isin(["g", "q", "e", ""]).all()


def test_images_read_from_tar_archives_give_the_same_subset(sample_root, subset_dir, tmp_path):
    """The sample's images packed as a mirror ships them (flat `ID.ext` members in several
    archives, one archive naming them `MD5.ext`), never extracted: the same subset as from the
    folder, broken files included."""
    import tarfile

    from animetag.data.danbooru import load_posts
    from animetag.data.image_index import ImageIndex
    from animetag.data.shards import peek

    posts, _ = load_posts([sample_root / "metadata" / "posts.json"])
    archives = [tarfile.open(tmp_path / "tars" / f"images-{k:04d}.tar", "w") for k in range(3)
                if (tmp_path / "tars").mkdir(exist_ok=True) is None]
    packed = set()
    index = ImageIndex.scan(sample_root)
    for _, p in posts.drop_duplicates("id").iterrows():
        path = index.locate(int(p["id"]), p["md5"], p["file_ext"], p["file"])
        if path is None:
            continue
        k = int(p["id"]) % 3
        stem = p["md5"] if k == 2 and p["md5"] and p["md5"] not in packed else str(int(p["id"]))
        packed.add(stem)
        archives[k].add(path, arcname=f"{stem}{path.suffix}")
    # the malformed record's image too, so the same images are here as in the folder
    bad = json.loads((sample_root / "sample.json").read_text())["broken_records"]["malformed_json"]["id"]
    archives[0].add(index.locate(bad), arcname=f"{bad}.jpg")
    for a in archives:
        a.close()
    cfg = SubsetConfig(top_k=40, image_size=32, images_per_shard=64, workers=2)
    s = build_subset(sample_root / "metadata" / "posts.json", tmp_path / "tars", tmp_path / "o", cfg, progress=False)
    tags, manifest, _ = read_subset(tmp_path / "o")
    tags0, manifest0, s0 = read_subset(subset_dir)
    assert tags.equals(tags0)
    cols = ["id", "md5", "split", "rating", "tags"]
    assert manifest[cols].equals(manifest0[cols])
    assert manifest["file"].str.match(r"images-000[0-2]\.tar:[0-9a-f]+\.\w+$").all()
    assert s["counts"] == s0["counts"] and s["archives"]["count"] == 3
    def reasons(summary):
        return sorted((str(x.get("id", x.get("record"))), x["reason"]) for x in summary["left_out"])

    assert reasons(s) == reasons(s0)
    corrupt = [x for x in s["left_out"] if x["reason"] == "corrupt_image"]
    assert corrupt and all(".tar:" in x["detail"] for x in corrupt)  # the member is named
    ids, images, labels = peek(tmp_path / "o", "val", 1000)
    ids0, images0, labels0 = peek(subset_dir, "val", 1000)
    assert (ids == ids0).all() and (images == images0).all() and (labels == labels0).all()
