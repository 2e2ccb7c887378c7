"""Fetching part of a Danbooru mirror from the Hub: presets, the plan, space, gated repos.
The Hub is stood in for by local folders; its errors are huggingface_hub's own classes."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from animetag.data.mirror import MIRRORS, MirrorAccessError, fetch, hub_token, match, plan_fetch, resolve_preset

DEEPGHS = "deepghs/danbooru2024-webp-4Mpixel"
ISEKAI = "deepghs/danbooru2024-webp-4Mpixel + isek-ai/danbooru-tags-2024"


class FakeHub:
    """Repositories as local folders: a listing with sizes, and a download that writes where
    hf_hub_download writes (its lock and metadata folder included)."""

    def __init__(self, root: Path, repos: dict[str, list[str]]):
        self.root, self.fetched = root, []
        for repo, names in repos.items():
            for name in names:
                p = root / repo / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(f"{repo}:{name}".encode() * 10)

    def list_files(self, repo, token):
        base = self.root / repo
        if not base.exists():
            raise _hub_error("RepositoryNotFoundError", repo)
        return [(p.relative_to(base).as_posix(), p.stat().st_size) for p in base.rglob("*") if p.is_file()]

    def download(self, repo, name, local_dir, token):
        self.fetched.append((repo, name))
        out = Path(local_dir) / name
        out.parent.mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)  # as the Hub client does
        out.write_bytes((self.root / repo / name).read_bytes())
        return str(out)


def _hub_error(cls_name: str, repo: str):
    from huggingface_hub import utils

    response = SimpleNamespace(headers={}, request=None, status_code=401)
    return getattr(utils, cls_name)(f"{cls_name}: {repo}", response=response)


def _deepghs_files(n: int = 6) -> list[str]:
    return (["metadata.parquet", "README.md", "extra/old-metadata.parquet"]
            + [f"images/{b:04d}.tar" for b in range(n)] + [f"images/{b:04d}.json" for b in range(n)])


def test_patterns_match_per_path_segment():
    assert match("metadata.parquet", "*.parquet") and not match("extra/old.parquet", "*.parquet")
    assert match("images/0007.tar", "images/*.tar") and not match("images/0007.json", "images/*.tar")
    assert not match("images/sub/0007.tar", "images/*.tar") and match("data/train-00000-of-00004.parquet",
                                                                      "data/*.parquet")


def test_the_recommended_preset_fetches_its_metadata_and_first_archives_through_the_local_disk(tmp_path):
    hub = FakeHub(tmp_path / "hub", {DEEPGHS: _deepghs_files()})
    dest, staging = tmp_path / "drive" / "mirror", tmp_path / "local"
    plan = plan_fetch(MIRRORS[DEEPGHS], dest, 2, list_files=hub.list_files, staging=staging)
    assert [f.path for f in plan.files] == ["metadata.parquet", "images/0000.tar", "images/0001.tar"]
    text = plan.describe()
    assert "1 metadata file(s)" in text and "2 image archive(s)" in text and "about 16,000 posts" in text
    assert "free space" in text and "to download: 3 file(s)" in text
    meta, tars = fetch(plan, download=hub.download)
    assert meta == [dest / "metadata.parquet"] and tars == [dest / "images/0000.tar", dest / "images/0001.tar"]
    assert tars[1].read_bytes() == (hub.root / DEEPGHS / "images/0001.tar").read_bytes()
    assert not list(dest.rglob(".cache")) and not list(dest.rglob("*.partial"))  # no lock files, no half files
    # more archives later: only the new one is downloaded
    plan = plan_fetch(MIRRORS[DEEPGHS], dest, 3, list_files=hub.list_files, staging=staging)
    assert [f.path for f in plan.to_fetch] == ["images/0002.tar"] and "(3 already in" in plan.describe()
    fetch(plan, download=hub.download)
    assert [n for _, n in hub.fetched].count("images/0000.tar") == 1 and len(hub.fetched) == 4


def test_metadata_from_a_second_repository(tmp_path):
    hub = FakeHub(tmp_path / "hub", {DEEPGHS: _deepghs_files(3),
                                     "isek-ai/danbooru-tags-2024": ["data/train-00000-of-00002.parquet",
                                                                    "data/train-00001-of-00002.parquet",
                                                                    "sfw/train-00000-of-00001.parquet"]})
    plan = plan_fetch(MIRRORS[ISEKAI], tmp_path / "m", 1, list_files=hub.list_files, staging=tmp_path / "l")
    assert [(f.repo, f.path) for f in plan.files] == [
        ("isek-ai/danbooru-tags-2024", "data/train-00000-of-00002.parquet"),
        ("isek-ai/danbooru-tags-2024", "data/train-00001-of-00002.parquet"),
        (DEEPGHS, "images/0000.tar")]
    meta, _ = fetch(plan, download=hub.download)
    assert all(p.is_file() and "metadata-repo" in p.parts for p in meta)


def test_a_fetch_that_does_not_fit_is_refused_before_anything_is_downloaded(tmp_path):
    hub = FakeHub(tmp_path / "hub", {DEEPGHS: _deepghs_files()})
    plan = plan_fetch(MIRRORS[DEEPGHS], tmp_path / "m", 4, list_files=hub.list_files, staging=tmp_path / "l")
    plan.free_bytes = plan.bytes_to_fetch + 10  # less than the 1 GB kept spare
    with pytest.raises(OSError, match=r"GB to download but .* GB free at .*fetch fewer archives"):
        fetch(plan, download=hub.download)
    assert hub.fetched == []


@pytest.mark.parametrize("error, words", [
    ("GatedRepoError", ["is gated", "accept its terms", "HF_TOKEN", "no token was found"]),
    ("RepositoryNotFoundError", ["no such dataset", "HF_TOKEN"]),
])
def test_a_gated_or_missing_repository_says_what_to_do(tmp_path, monkeypatch, error, words):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)

    def refuse(repo, token):
        raise _hub_error(error, repo)

    with pytest.raises(MirrorAccessError) as e:
        plan_fetch(MIRRORS[DEEPGHS], tmp_path / "m", 1, token=hub_token(), list_files=refuse)
    msg = str(e.value)
    assert all(w in msg for w in words), msg
    assert f"https://huggingface.co/datasets/{DEEPGHS}" in msg


def test_a_refused_download_names_the_file_and_the_token(tmp_path):
    hub = FakeHub(tmp_path / "hub", {DEEPGHS: _deepghs_files(1)})
    plan = plan_fetch(MIRRORS[DEEPGHS], tmp_path / "m", 1, list_files=hub.list_files, staging=tmp_path / "l")

    def refuse(repo, name, local_dir, token):
        raise _hub_error("HfHubHTTPError", repo)

    with pytest.raises(MirrorAccessError, match=r"refused the token \(HTTP 401\) while fetching metadata.parquet"):
        fetch(plan, token="hf_x", download=refuse)


def test_the_token_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", " hf_abc ")
    assert hub_token() == "hf_abc"


def test_custom_mirrors_and_unknown_names():
    p = resolve_preset("custom", repo="me/mirror", archives="tars/*.tar", metadata="meta/*.parquet")
    assert (p.repo, p.archives, p.metadata, p.meta_repo) == ("me/mirror", "tars/*.tar", "meta/*.parquet", "me/mirror")
    with pytest.raises(ValueError, match="known: deepghs"):
        resolve_preset("danbooru9000")
    with pytest.raises(ValueError, match="needs its repository"):
        resolve_preset("custom")
    assert MIRRORS[DEEPGHS].archives_for(25_000) == 4  # 8,000 posts per archive, 85% usable


def test_form_paths_and_the_profile_a_real_source_needs(tmp_path):
    from animetag.data.sample import generate
    from animetag.notebook import profile_for_source, split_paths

    spaced = tmp_path / "My Drive" / "danbooru" / "posts.json"
    spaced.parent.mkdir(parents=True)
    spaced.write_text("{}\n")
    assert split_paths(str(spaced)) == [spaced]  # a Drive path with a space is one path
    assert split_paths(f"{spaced}; {tmp_path}/b.parquet") == [spaced, tmp_path / "b.parquet"]
    assert split_paths("a.json b.json") == [Path("a.json"), Path("b.json")]
    assert split_paths("") == []
    profile, note = profile_for_source("sample", str(spaced))
    assert profile == "full" and "switched from 'sample' to 'full'" in note and str(spaced) in note
    profile, note = profile_for_source("sample", mirror=DEEPGHS)
    assert profile == "full" and DEEPGHS in note
    generate(tmp_path / "sample", 40, seed=0)
    assert profile_for_source("sample", str(tmp_path / "sample" / "metadata" / "posts.json")) == ("sample", "")
    assert profile_for_source("sample", "", "none") == ("sample", "")
    assert profile_for_source("full", str(spaced)) == ("full", "")


def test_the_nyanko7_preset_takes_its_json_lines_and_original_archives(tmp_path):
    repo = "nyanko7/danbooru2023"
    hub = FakeHub(tmp_path / "hub", {repo: ["metadata/posts.json", "metadata/tags.json", "README.md",
                                            "original/data-0000.tar", "original/data-0001.tar",
                                            "recent/data-1000.tar", "original/data-0000.json"]})
    plan = plan_fetch(MIRRORS[repo], tmp_path / "m", 5, list_files=hub.list_files, staging=tmp_path / "l")
    assert [f.path for f in plan.files] == ["metadata/posts.json", "original/data-0000.tar", "original/data-0001.tar"]
    assert "only 2 archive(s) match" in plan.describe()
