"""Splits that cannot leak: families (parent/child chains, identical files, near-duplicates)
found, kept in one split, and the leakage a random split would have had counted."""

import json

import numpy as np
import pandas as pd
import pytest


def _hex(bits: np.ndarray) -> str:
    return np.packbits(bits).tobytes().hex()


def test_near_pairs_are_every_pair_within_the_distance_and_no_other():
    from animetag.data.families import near_pairs

    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (300, 256), dtype=np.uint8)
    for src, dst, flips in ((3, 250, 0), (10, 11, 24), (20, 140, 25)):
        bits[dst] = bits[src]
        bits[dst, rng.choice(256, flips, replace=False)] ^= 1
    hashes = [_hex(b) for b in bits]
    hashes[42] = ""  # no hash (an image that could not be hashed): never a pair
    brute = {(i, j) for i in range(300) for j in range(i + 1, 300)
             if hashes[i] and hashes[j] and (bits[i] != bits[j]).sum() <= 24}
    got = near_pairs(hashes, 24, block=7)  # blocks that do not divide the rows
    assert set(got) == brute and len(got) == len(brute)
    assert (3, 250) in brute and (10, 11) in brute and (20, 140) not in brute


def test_families_join_a_post_to_its_parent_siblings_without_their_parent_one_file_and_near_copies():
    from animetag.data.families import find_families

    ids = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    parents = np.array([0, 1, 99, 99, 0, 0, 0, 0])  # 2 is a variant of 1; 3 and 4 of 99, which is not kept
    md5s = ["a", "b", "c", "d", "e", "e", "f", "g"]  # 5 and 6: the same file
    h = np.zeros((8, 256), np.uint8)
    h[7, :] = 1
    h[6, :] = 1
    h[6, :3] = 0  # 7 and 8: three bits apart
    h[0, :128] = 1  # 1 far from everyone
    h[1, 128:] = 1
    for r in (2, 3, 4, 5):
        h[r, r * 40: r * 40 + 60] = 1
    family, links, refused = find_families(ids, md5s, parents, [_hex(b) for b in h], max_distance=24)
    groups = {frozenset(ids[family == f].tolist()) for f in np.unique(family)}
    assert groups == {frozenset({1, 2}), frozenset({3, 4}), frozenset({5, 6}), frozenset({7, 8})}
    assert links == {"parent_child": 2, "md5": 1, "phash": 1, "phash_refused": 0}
    alone, _, _ = find_families(ids, md5s, np.zeros(8), [_hex(b) for b in h], max_distance=-1)
    assert len(np.unique(alone)) == 7  # no links but the file: only 5 and 6 together


def test_near_duplicates_never_gather_more_than_a_few_images_into_one_family():
    """Forty images with one hash (flat colours, blank pages): not one picture re-uploaded
    forty times. Near-duplicate links stop at MAX_NEAR_FAMILY images; the rest are counted."""
    from animetag.data.families import MAX_NEAR_FAMILY, find_families

    ids = np.arange(1, 41)
    family, links, refused = find_families(ids, [str(i) for i in ids], np.zeros(40), ["ab" * 32] * 40)
    sizes = np.bincount(np.unique(family, return_inverse=True)[1])
    assert sizes.max() == MAX_NEAR_FAMILY and links["phash"] == 40 - len(sizes) and links["phash_refused"] > 0


def test_a_family_split_keeps_each_family_whole_and_the_audit_counts_a_random_splits_leak():
    from animetag.config import SubsetConfig
    from animetag.data.families import leaked
    from animetag.data.subset import family_audit, split_of, stratified_split

    rng = np.random.default_rng(1)
    n = 600
    family = np.arange(n)
    for start in range(0, 300, 3):  # 100 families of three: an original and two variants
        family[start: start + 3] = start
    Y = (rng.random((n, 12)) < 0.2).astype(np.uint8)
    for start in range(0, 300, 3):
        Y[start + 1: start + 3] = Y[start]  # variants carry the original's tags
    cfg = SubsetConfig(seed=3)
    split = split_of(Y, family, cfg)
    for start in range(0, 300, 3):
        assert len(set(split[start: start + 3])) == 1
    assert leaked(split, family) == 0 and 0.05 < (split == "test").mean() < 0.15
    plain = stratified_split(Y, 0.1, 0.1, 3)
    by_hand = sum(1 for i in np.flatnonzero(plain == "test")
                  if any(plain[j] == "train" for j in np.flatnonzero(family == family[i]) if j != i))
    record = family_audit(Y, family, {"parent_child": 200, "md5": 0, "phash": 0}, cfg)
    assert record["random_split_would_leak"]["test_images_with_family_in_train"] == by_hand > 0
    assert record["families_of_two_or_more"] == 100 and record["images_in_them"] == 300
    assert (split_of(Y, family, SubsetConfig(seed=3, split_by="random")) == plain).all()


@pytest.mark.slow
def test_the_sample_subset_finds_the_families_the_sample_planted_and_none_else(sample_root, subset_dir):
    """Every variant and re-upload the sample planted shares its original's family (re-uploads
    are linked by nothing but their pixels), no family joins posts the sample did not relate,
    no test image has family in train, and the audit's random-split leak is recomputed."""
    from animetag.data.families import leaked
    from animetag.data.subset import stratified_split
    from animetag.folders import SubsetFolder

    planted = json.loads((sample_root / "sample.json").read_text())["problems"]["families"]["members"]
    data = SubsetFolder(subset_dir)
    m = data.manifest
    fam = pd.read_csv(subset_dir / "families.csv")
    family_of = dict(zip(fam["id"], fam["family"]))
    kept = set(m["id"])
    related = {}
    for child, info in planted.items():
        child, original = int(child), int(info["of"])
        if child in kept and original in kept:
            assert family_of[child] == family_of[original], (child, info)
            related.setdefault(original, {original}).add(child)
    n_pairs = sum(len(v) - 1 for v in related.values())
    assert n_pairs >= 10
    for f, members in fam.groupby("family")["id"]:
        originals = {int(planted[str(i)]["of"]) if str(i) in planted else i for i in members}
        assert len(originals) == 1, f"family {f} joins unrelated posts {sorted(members)}"
    summary = data.summary["families"]
    assert summary["leaked_here"]["test_images_with_family_in_train"] == 0
    split = dict(zip(m["id"], m["split"]))
    for _, members in fam.groupby("family")["id"]:
        assert len({split[i] for i in members}) == 1
    family = np.array([family_of.get(i, i) for i in m["id"]])
    from animetag.data.subset import label_matrix

    Y = label_matrix(m, data.tags)
    plain = stratified_split(Y, 0.1, 0.1, 0)
    assert summary["random_split_would_leak"]["test_images_with_family_in_train"] == leaked(plain, family)


@pytest.mark.slow
def test_re_uploads_the_family_cap_leaves_apart_are_counted_in_the_audit_and_warned(tmp_path):
    """Forty re-uploads of one picture (distinct md5s, one pixel apart): the family cap
    refuses to gather them, so they land on both sides of the split; subset.json counts the
    test images near a training image by a refused link, and the build warns."""
    import hashlib
    import warnings

    from PIL import Image

    from animetag.config import SubsetConfig
    from animetag.data.families import MAX_NEAR_FAMILY
    from animetag.data.sample import generate
    from animetag.data.subset import build_subset

    root = tmp_path / "sample"
    generate(root, n_images=160, seed=3, clean=True)
    meta = root / "metadata" / "posts.json"
    records = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
    base = next(r for r in records if list(root.glob(f"512px/*/{r['id']}.*")))
    src = Image.open(next(root.glob(f"512px/*/{base['id']}.*"))).convert("RGB")
    extra = []
    for k in range(40):
        im = src.copy()
        im.putpixel((k % im.width, 0), (k * 6, 255 - k * 6, 7))
        pid = 9_000_000 + k
        path = root / "512px" / f"{pid % 1000:04d}" / f"{pid}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path)
        extra.append({**base, "id": pid, "md5": hashlib.md5(path.read_bytes()).hexdigest(), "file_ext": "png",
                      "parent_id": None})
    meta.write_text("\n".join(json.dumps(r) for r in records + extra) + "\n")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = build_subset(meta, root, tmp_path / "subset",
                               SubsetConfig(top_k=20, image_size=32, images_per_shard=64, workers=1, seed=2),
                               progress=False)
    out = tmp_path / "subset"
    assert json.loads((out / "subset.json").read_text())["families"] == summary["families"]
    m = pd.read_csv(out / "manifest.csv")
    copies = m[m["id"] >= 9_000_000]
    assert len(copies) == 40 and copies["split"].nunique() > 1  # left apart by the cap: the case to be seen
    fam = summary["families"]
    assert fam["links"]["phash_refused"] > 0 and fam["largest"] <= MAX_NEAR_FAMILY + 1
    in_train = (copies["split"] == "train").any()
    by_hand = int((copies["split"] == "test").sum()) if in_train else 0
    assert by_hand > 0
    assert fam["leaked_here"]["test_images_near_train_by_refused_link"] == by_hand
    assert fam["leaked_here"]["test_images_with_family_in_train"] == 0  # what the audit said before
    said = [str(w.message) for w in caught if "refused" in str(w.message)]
    assert said and f"{by_hand} test images are near-duplicates" in said[0]
    assert any("near-duplicates" in w for w in summary["warnings"])
