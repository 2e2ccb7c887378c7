"""Subsets built from small replicas of the public mirrors' layouts: 1,000 archives by
`id % 1000` with only a few downloaded, `ID.webp` (or `ID.jpg`) members, each mirror's own
metadata columns. Only posts with an image here are selected, the vocabulary is counted
over them, and a shortfall says how many more archives would close the gap."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animetag.config import SubsetConfig
from animetag.data.subset import build_subset, read_subset

N_POSTS = 10_000  # ids 1..N: ten posts in each of the 1,000 buckets
PRESENT = range(6)  # buckets (archives) downloaded: sixty posts
GENERAL = ["1girl", "solo", "long_hair", "smile", "skirt", "open_mouth", "blue_eyes", "short_hair"]


def _image(pid: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40 + pid % 7, 30), (pid * 37 % 256, pid * 91 % 256, 128)).save(buf, "WEBP")
    return buf.getvalue()


def _post(pid: int) -> dict:
    """Every post has its own tags; `everywhere_else` is on every post whose bucket is not
    downloaded (the most common tag of the metadata, and of no post with an image here)."""
    rng = np.random.default_rng(pid)
    general = [t for t, p in zip(GENERAL, [0.8, 0.6, 0.5, 0.4, 0.3, 0.3, 0.2, 0.2]) if rng.random() < p] or ["solo"]
    if pid % 1000 not in PRESENT:
        general.append("everywhere_else")
    return {"id": pid, "md5": f"{pid:032x}", "file_ext": "png", "rating": "gsqe"[pid % 4],
            "image_width": 1200, "image_height": 900, "is_deleted": pid == 2001,
            "general": general, "character": ["hakurei_reimu"] if pid % 3 == 0 else [],
            "copyright": ["touhou"] if pid % 3 == 0 else [], "artist": [f"artist_{pid % 50}"], "meta": ["highres"]}


def _archives(root: Path, pattern: str, ext: str = "webp", member_dir: bool = False) -> None:
    for b in PRESENT:
        path = root / pattern.format(b=b)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w") as tar:
            for pid in range(b or 1000, N_POSTS + 1, 1000):
                data = _image(pid)
                info = tarfile.TarInfo(f"{b:04d}/{pid}.{ext}" if member_dir else f"{pid}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _api(p: dict) -> dict:
    rec = {k: p[k] for k in ("id", "md5", "file_ext", "rating", "image_width", "image_height", "is_deleted")}
    for c in ("general", "character", "copyright", "artist", "meta"):
        rec[f"tag_string_{c}"] = " ".join(p[c])
    rec["tag_string"] = " ".join(sorted(sum((p[c] for c in ("general", "character", "copyright", "artist", "meta")),
                                            [])))
    return rec


def deepghs(root: Path) -> Path:
    """deepghs/danbooru2024-webp-4Mpixel: metadata.parquet with the API columns, images/NNNN.tar."""
    import pandas as pd

    pd.DataFrame([{**_api(_post(i)), "score": i % 40} for i in range(1, N_POSTS + 1)]).to_parquet(
        root / "metadata.parquet")
    _archives(root, "images/{b:04d}.tar")
    return root / "metadata.parquet"


def isekai(root: Path) -> Path:
    """isek-ai/danbooru-tags-2024: one list column per category, ratings as words, no md5."""
    import pandas as pd

    rows = []
    for i in range(1, N_POSTS + 1):
        p = _post(i)
        rows.append({"id": i, "rating": {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}[
            p["rating"]], **{c: [t.replace("_", " ") for t in p[c]] for c in ("general", "character", "copyright",
                                                                             "artist", "meta")},
            "created_at": "2024-01-01T00:00:00"})
    (root / "data").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "data" / "train-00000-of-00001.parquet")
    _archives(root, "images/{b:04d}.tar")
    return root / "data" / "train-00000-of-00001.parquet"


def p1atdev(root: Path) -> Path:
    """p1atdev/danbooru-2024: md5, file_ext and the size inside a `media_asset` struct."""
    import pandas as pd

    rows = []
    for i in range(1, N_POSTS + 1):
        r = _api(_post(i))
        asset = {k: r.pop(k) for k in ("md5", "file_ext", "image_width", "image_height")}
        rows.append({**r, "media_asset": {"id": 10 * i, **asset}})
    pd.DataFrame(rows).to_parquet(root / "posts.parquet")
    _archives(root, "images/{b:04d}.tar")
    return root / "posts.parquet"


def nyanko7(root: Path) -> Path:
    """nyanko7/danbooru2023: metadata/posts.json (JSON lines of API records, a nested
    media_asset with its own id), images in original/data-NNNN.tar."""
    (root / "metadata").mkdir(parents=True)
    with open(root / "metadata" / "posts.json", "w") as f:
        for i in range(1, N_POSTS + 1):
            r = _api(_post(i))
            # the asset's own id is the id of a post that is here: the line must still be read right
            f.write(json.dumps({**r, "media_asset": {"id": 1000 + i % 6, "md5": r["md5"]}}) + "\n")
    _archives(root, "original/data-{b:04d}.tar", ext="jpg", member_dir=True)
    return root / "metadata" / "posts.json"


MIRRORS = {"deepghs": deepghs, "isekai": isekai, "p1atdev": p1atdev, "nyanko7": nyanko7}
HERE = {pid for b in PRESENT for pid in range(b or 1000, N_POSTS + 1, 1000)}


@pytest.mark.parametrize("mirror", list(MIRRORS))
def test_a_subset_is_drawn_from_the_posts_whose_archive_is_here(tmp_path, mirror):
    (tmp_path / "mirror").mkdir()
    meta = MIRRORS[mirror](tmp_path / "mirror")
    cfg = SubsetConfig(top_k=6, max_images=40, image_size=16, workers=1, min_tags=1)
    s = build_subset(meta, tmp_path / "mirror", tmp_path / "o", cfg, progress=False)
    tags, manifest, summary = read_subset(tmp_path / "o")
    deleted = set() if mirror == "isekai" else {2001}  # isek-ai's table has no is_deleted
    assert set(manifest["id"]) <= HERE - deleted and len(manifest) == 40  # present, not the deleted one
    c = s["counts"]
    assert c["records_read"] == N_POSTS and c["with_image"] == len(HERE)
    assert c["left_out"]["missing_file"] == N_POSTS - len(HERE) and c["left_out"].get("deleted", 0) == len(deleted)
    listed = [x for x in s["left_out"] if x["reason"] == "missing_file"]
    assert 0 < len(listed) <= 20 and s["left_out_unlisted"]["missing_file"] == N_POSTS - len(HERE) - len(listed)
    assert all(x["id"] not in HERE for x in listed)
    # the vocabulary is counted over the posts with an image here, as subset.json says
    assert "everywhere_else" not in set(tags["name"]) and "1girl" in set(tags["name"])
    assert s["vocabulary"]["counted_over"] == "posts_with_image" and s["vocabulary"]["posts"] == len(HERE - deleted)
    counts = dict(zip(tags["name"], tags["count"]))  # over the kept posts, the subset's images
    assert counts["1girl"] == sum("1girl" in _post(i)["general"] for i in manifest["id"])
    assert counts["1girl"] < sum("1girl" in _post(i)["general"] for i in HERE - deleted)  # 40 of them kept
    assert manifest["file"].str.contains(r"\.tar:").all()
    if mirror == "isekai":
        assert "long_hair" in set(tags["name"]) and "long" not in set(tags["name"])  # one tag, spaces read as _
    assert len(json.dumps(summary)) < 20_000
    assert s["shortfall"] is None


def test_a_shortfall_says_how_many_more_archives_would_close_it(tmp_path):
    (tmp_path / "mirror").mkdir()
    meta = deepghs(tmp_path / "mirror")
    cfg = SubsetConfig(top_k=6, max_images=200, image_size=16, workers=1)
    s = build_subset(meta, tmp_path / "mirror", tmp_path / "o", cfg, progress=False)
    short = s["shortfall"]
    kept = s["counts"]["kept"]
    assert kept == len(HERE) - 1 and short["kept"] == kept and short["asked"] == 200
    assert short["archives"] == len(PRESENT) and short["usable_per_archive"] == round(kept / len(PRESENT), 1)
    assert short["more_archives_needed"] == int(np.ceil((200 - kept) / (kept / len(PRESENT))))
    assert f"only {kept} of the 200 images" in short["message"]
    assert f"about {short['more_archives_needed']} more archive(s)" in short["message"]
    assert short["message"] in s["warnings"]


def test_presence_is_learnt_from_one_listing_not_a_stat_per_post(tmp_path, monkeypatch):
    import os

    (tmp_path / "mirror").mkdir()
    meta = deepghs(tmp_path / "mirror")
    calls = []
    real_stat = os.stat

    def counting_stat(*args, **kwargs):
        calls.append(args[0])
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    cfg = SubsetConfig(top_k=6, max_images=40, image_size=16, workers=1)
    build_subset(meta, tmp_path / "mirror", tmp_path / "o", cfg, progress=False)
    under_images = [c for c in calls if str(c).startswith(str(tmp_path / "mirror" / "images"))]
    assert len(under_images) < 30, len(under_images)  # 10,000 posts, 6 archives: not one per post


def test_the_tag_study_reads_the_posts_the_subset_was_drawn_from(tmp_path):
    from animetag.notebook import Workspace, study_posts

    (tmp_path / "mirror").mkdir()
    meta = deepghs(tmp_path / "mirror")
    subset = tmp_path / "subsets" / "full"
    build_subset(meta, tmp_path / "mirror", subset, SubsetConfig(top_k=6, max_images=40, image_size=16, workers=1),
                 progress=False)
    ws = Workspace("full", tmp_path, [], None, subset, tmp_path / "runs" / "full", tmp_path / "figures")
    posts, report, where = study_posts(ws)  # no METADATA given: the subset's own sources
    assert set(posts["id"]) == HERE and report.absent == N_POSTS - len(HERE)
    assert not posts["tags_general"].str.contains("everywhere_else").any()
    assert f"the {len(HERE)} posts with an image under {tmp_path / 'mirror'} (of {N_POSTS:,}" in where
