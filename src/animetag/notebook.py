"""The notebooks' side of the package: where a notebook's inputs and outputs live (the
workspace), its form fields read from the environment, and building a missing prerequisite.

A notebook passes its form fields; the environment is read in one place only,
`params_from_env`, which lets `make demo`, nbmake and CI set a form field from outside
(ANIMETAG_<FIELD>). In the profiles that run on the built-in sample (`sample`, `tiny`) a
missing prerequisite (the sample, its subset, a trained run) is built from it; in `full` it
is named in a clear error instead.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from animetag.config import SAMPLE_PROFILES, data_home, subset_config
from animetag.data.danbooru import load_posts
from animetag.data.image_index import ImageIndex
from animetag.data.sample import generate
from animetag.data.subset import build_subset
from animetag.folders import RunFolder, SubsetFolder


@dataclass
class Workspace:
    profile: str
    home: Path
    metadata: list[Path]
    images_root: Path | None
    subset: Path
    run: Path
    figures: Path

    @property
    def on_sample(self) -> bool:
        """Whether this profile runs on the built-in sample (built when missing)."""
        return self.profile in SAMPLE_PROFILES


def params_from_env(**params):
    """The notebook's form fields, each overridden by the environment variable
    ANIMETAG_<NAME> where it is set (how `make demo`, nbmake and CI drive a notebook). A value
    takes the type of the field's default: int, float, bool (1/true/yes/on), or text."""
    out = {}
    for name, default in params.items():
        raw = os.environ.get(f"ANIMETAG_{name}")
        if raw is None or not raw.strip():
            out[name] = default
        elif isinstance(default, bool):
            out[name] = raw.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(default, (int, float)):
            try:
                out[name] = type(default)(raw)
            except ValueError:
                raise ValueError(f"ANIMETAG_{name}={raw!r} is not a{'n integer' if isinstance(default, int) else ' number'}"
                                 ) from None
        else:
            out[name] = raw
    return out


def split_paths(text: str) -> list[Path]:
    """Paths from a form field: separated by `;` or new lines; else the whole text when it
    names an existing file or folder (a Drive path may hold spaces); else separated by spaces
    (quotes keep a path with spaces together)."""

    text = text.strip()
    if not text:
        return []
    if ";" in text or "\n" in text:
        return [Path(p.strip()) for p in text.replace("\n", ";").split(";") if p.strip()]
    if Path(text).exists():
        return [Path(text)]
    return [Path(p) for p in shlex.split(text)]


def profile_for_source(profile: str, metadata: str = "", mirror: str = "") -> tuple[str, str]:
    """(profile, note): a Danbooru mirror or real metadata named with the `sample` profile
    (64 px, a slim model) switches to `full`, with a note saying so. Metadata of the built-in
    sample (a folder with `sample.json` above it) is not real."""
    if profile not in SAMPLE_PROFILES:
        return profile, ""
    if mirror and mirror != "none":
        return "full", f"PROFILE switched from {profile!r} to 'full': a Danbooru mirror is named ({mirror})"
    for p in split_paths(metadata):
        if not any((d / "sample.json").exists() for d in p.resolve().parents):
            return "full", (f"PROFILE switched from {profile!r} to 'full': {p} is real metadata, not the built-in "
                            f"sample (the {profile} profile trains a slim model on small images)")
    return profile, ""


def workspace(profile: str = "sample", home: str | os.PathLike = "", metadata: str = "",
              images: str | os.PathLike = "", subset: str | os.PathLike = "", run: str | os.PathLike = "",
              figures: str | os.PathLike = "") -> Workspace:
    """A notebook's folders from its form fields (WORKSPACE as `home`, METADATA, IMAGES,
    SUBSET, RUN), each empty one the profile's default: `<home>/subsets/<profile>`, ... and,
    on the sample profiles, the built-in sample as metadata and images."""
    home = data_home(home)
    paths = split_paths(metadata)
    if profile in SAMPLE_PROFILES and not paths:
        paths = [home / "sample" / "metadata" / "posts.json"]
        images = images or home / "sample"
    return Workspace(profile, home, paths, Path(images) if str(images).strip() else None,
                     Path(subset) if str(subset).strip() else home / "subsets" / profile,
                     Path(run) if str(run).strip() else home / "runs" / profile,
                     Path(figures) if str(figures).strip() else home / "figures" / profile)


def ensure_sample(ws: Workspace, n_images: int | None = None, seed: int = 0) -> Path:
    """The built-in sample under ws.home/sample, generated if it is missing (with the
    profile's number of posts: sample 3,000, tiny 400)."""
    root = ws.home / "sample"
    if not (root / "sample.json").exists():
        generate(root, n_images=n_images or SAMPLE_PROFILES.get(ws.profile, SAMPLE_PROFILES["sample"]), seed=seed)
    return root


def ensure_metadata(ws: Workspace) -> list[Path]:
    if ws.on_sample and ws.metadata == [ws.home / "sample" / "metadata" / "posts.json"]:
        ensure_sample(ws)
    missing = [p for p in ws.metadata if not p.exists()]
    if not ws.metadata or missing:
        raise FileNotFoundError(
            f"Danbooru metadata not found: {missing or 'none configured'}. Set ANIMETAG_METADATA to "
            "your metadata files (JSON lines, JSON, CSV or Parquet) and ANIMETAG_IMAGES to the image root.")
    return ws.metadata


def study_posts(ws: Workspace):
    """(posts, load report, one line saying which posts): the metadata's posts that have an
    image here, the posts a subset draws from and counts its tags over. The metadata and
    images are the workspace's (METADATA / IMAGES, or the built-in sample), else the ones the
    built subset records (so a later notebook needs no form field once notebook 01 ran)."""

    metadata, images = ws.metadata, ws.images_root
    summary = ws.subset / SubsetFolder.SUMMARY
    if not metadata and summary.exists():
        recorded = SubsetFolder(ws.subset).summary
        metadata, images = [Path(p) for p in recorded["metadata"]], Path(recorded["images_root"])
    else:
        metadata = ensure_metadata(ws)
    index = ImageIndex.scan(images) if images is not None and images.exists() else None
    posts, report = load_posts(metadata, present=index)
    where = (f"the {len(posts):,} posts with an image under {images} (of {report.records + report.absent:,} in "
             f"the metadata)" if index is not None else f"all {len(posts):,} posts of the metadata")
    return posts, report, where


def ensure_subset(ws: Workspace, **overrides) -> Path:
    """The subset folder, built first if it is missing (`sample`), else a clear error (`full`)."""
    if (ws.subset / SubsetFolder.SUMMARY).exists():
        return ws.subset
    if not ws.on_sample and not ws.metadata:
        raise FileNotFoundError(f"no built subset at {ws.subset}: run notebook 01 (or `animetag subset`) first")

    ensure_metadata(ws)
    if ws.images_root is None:
        raise FileNotFoundError("ANIMETAG_IMAGES is not set: where are the images?")
    build_subset(ws.metadata, ws.images_root, ws.subset, subset_config(ws.profile, **overrides), overwrite=True)
    return ws.subset


def ensure_run(ws: Workspace, **settings) -> Path:
    """The trained run folder, trained first on the sample if it is missing (the sample
    profiles, with the profile's settings and any `settings` given), else a clear error."""
    if (ws.run / RunFolder.MODEL).exists():
        return ws.run
    if not ws.on_sample:
        RunFolder(ws.run).require_model()  # the error that says what to do
    from animetag.training.fit import train

    train(ensure_subset(ws), ws.run, profile=ws.profile, **settings)
    return ws.run


def local_subset(subset: Path, drive: Path = Path("/content/drive"),
                 local: Path = Path("/content/animetag-local")) -> Path:
    """A subset on Google Drive, copied once per Colab session to the machine's own disk
    (`local`), where training reads its shards many times over at disk speed instead of
    Drive's; any other subset as it is. The copy is made again when the subset on Drive has
    changed (another subset.json), and is written under a temporary name first."""

    subset = Path(subset)
    try:
        subset.resolve().relative_to(drive.resolve())
    except ValueError:
        return subset
    dest = local / subset.name
    summary = SubsetFolder.SUMMARY
    wanted = (subset / summary).read_bytes()
    if (dest / summary).exists() and (dest / summary).read_bytes() == wanted:
        return dest
    tmp = local / f"{subset.name}.partial"
    for old in (tmp, dest):
        if old.exists():
            shutil.rmtree(old)
    shutil.copytree(subset, tmp)
    tmp.rename(dest)
    return dest
