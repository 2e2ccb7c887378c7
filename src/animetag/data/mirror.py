"""Fetch part of a public Danbooru mirror from the Hugging Face Hub: its metadata and the first
N of its image archives (tar files of `ID.ext` members, grouped by `id % 1000`), which
`animetag subset` then reads in place.

Known mirrors are presets (`MIRRORS`): their exact file names, archive pattern, image
format, whether they are gated, and what one archive holds. Before anything is downloaded,
`plan_fetch` lists what will be fetched (files and GB, from the Hub's own file metadata), the
posts it should yield and the free space at the destination, and refuses what will not fit.
Each file is downloaded to the local disk (where the Hub client keeps its lock files) and
then moved into the destination under a temporary name, renamed when whole: a Drive folder
never holds a lock file or half a file. A token comes from the environment (`HF_TOKEN`) or
Colab's secrets; a gated or missing repository ends in one message that says what to do.
`huggingface_hub` is imported only when used (Colab has it; `pip install animetag[hub]`).
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlparse

GB = 1e9


@dataclass(frozen=True)
class MirrorPreset:
    """Where a mirror keeps its files, and what to expect of them."""

    repo: str  # the dataset with the image archives
    archives: str  # their pattern, matched per path segment
    metadata: str  # the metadata file(s), a pattern per path segment
    metadata_repo: str = ""  # where the metadata lives, when not beside the images
    image_format: str = ""
    gated: bool = False
    gb_per_archive: float = 0.0  # about; the plan uses the Hub's real sizes
    posts_per_archive: int = 0  # about
    note: str = ""

    @property
    def meta_repo(self) -> str:
        return self.metadata_repo or self.repo

    def archives_for(self, n_images: int, usable: float = 0.85) -> int:
        """About how many archives hold `n_images` usable posts (some are deleted, have none
        of the kept tags, or do not decode)."""
        return math.ceil(n_images / (self.posts_per_archive * usable)) if self.posts_per_archive else 0


MIRRORS: dict[str, MirrorPreset] = {
    "deepghs/danbooru2024-webp-4Mpixel": MirrorPreset(
        repo="deepghs/danbooru2024-webp-4Mpixel", archives="images/*.tar", metadata="metadata.parquet",
        image_format="WebP, at most 4M pixels", gated=True, gb_per_archive=1.7, posts_per_archive=8000,
        note="recommended: Danbooru to 2024, one Parquet table for all posts; gated (accept the terms, add a token)"),
    "deepghs/danbooru2024-webp-4Mpixel + isek-ai/danbooru-tags-2024": MirrorPreset(
        repo="deepghs/danbooru2024-webp-4Mpixel", archives="images/*.tar", metadata="data/*.parquet",
        metadata_repo="isek-ai/danbooru-tags-2024", image_format="WebP, at most 4M pixels", gated=True,
        gb_per_archive=1.7, posts_per_archive=8000,
        note="the same images, tags from isek-ai's table (one list per category, no md5: images found by id)"),
    "nyanko7/danbooru2023": MirrorPreset(
        repo="nyanko7/danbooru2023", archives="original/data-*.tar", metadata="metadata/posts.json",
        image_format="the original files (JPEG, PNG, GIF, ...)", gated=False, gb_per_archive=8.0,
        posts_per_archive=6000,
        note="Danbooru to 2023; its metadata is 20.7 GB of JSON lines (streamed, only posts with an image kept); "
             "original images, several times larger per archive"),
}


def match(path: str, pattern: str) -> bool:
    """A repository path against a pattern, segment by segment: `*` never crosses a `/`, so
    `*.parquet` is a top-level file and `images/*.tar` the archives in `images/` only."""
    parts, pats = path.split("/"), pattern.strip("/").split("/")
    return len(parts) == len(pats) and all(fnmatchcase(a, p) for a, p in zip(parts, pats))


def hub_token() -> str | None:
    """A Hugging Face token: `HF_TOKEN` in the environment, else Colab's secret `HF_TOKEN`
    (when the notebook was given access to it); None when there is none."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var, "").strip():
            return os.environ[var].strip()
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        return userdata.get("HF_TOKEN") or None
    except Exception:  # not on Colab, no such secret, or access not granted
        return None


class MirrorAccessError(RuntimeError):
    """The Hub refused a repository or file; the message says what to do."""


def _access_error(e: Exception, repo: str, token: str | None, what: str) -> Exception:
    """The Hub's exception as one message a Colab user can act on (others unchanged)."""
    if isinstance(e, MirrorAccessError):
        return e
    if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror)) or type(e).__name__ in (
            "ConnectError", "ConnectTimeout", "ConnectionError", "ReadTimeout", "OfflineModeIsEnabled"):
        return _offline(_hub_host(), e)
    try:
        from huggingface_hub.utils import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    except ImportError:
        return e
    page = f"https://huggingface.co/datasets/{repo}"
    token_help = ("add a Colab secret named HF_TOKEN (key icon in the left bar) holding a read token from "
                  "https://huggingface.co/settings/tokens, give this notebook access to it, and run the cell again "
                  "(elsewhere: set the environment variable HF_TOKEN)")
    seen = "a token was given" if token else "no token was found"
    if isinstance(e, GatedRepoError):  # a subclass of RepositoryNotFoundError: first
        return MirrorAccessError(f"{repo} is gated ({seen}): open {page}, log in and accept its terms; then "
                                 f"{token_help}")
    if isinstance(e, RepositoryNotFoundError):
        return MirrorAccessError(f"{repo}: no such dataset on the Hugging Face Hub, or it is private or gated and "
                                 f"{seen}. Check the name at {page}; if it exists, accept its terms there, then "
                                 f"{token_help}")
    if isinstance(e, EntryNotFoundError):
        return MirrorAccessError(f"{repo} has no file {what} (the mirror may have renamed it): see {page}/tree/main")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, HfHubHTTPError) and status in (401, 403):
        return MirrorAccessError(f"{repo}: the Hub refused the token (HTTP {status}) while fetching {what}. "
                                 f"Accept the terms at {page}, and check that the token can read: {token_help}")
    return e


_OFFLINE_HELP = ("this machine is offline or cannot resolve it. On Colab, check that the runtime is connected "
                 "and run the cell again; or put the metadata and image archives on Drive and give METADATA and "
                 "IMAGES instead of a mirror")


def _offline(host: str, e: BaseException) -> MirrorAccessError:
    return MirrorAccessError(f"cannot reach the Hugging Face Hub at {host} ({type(e).__name__}: {e}): {_OFFLINE_HELP}")


def _hub_host() -> str:
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except (ImportError, AttributeError):
        endpoint = "https://huggingface.co"
    return urlparse(endpoint).hostname or "huggingface.co"


_reached: set[str] = set()


def reach_hub(timeout: float = 5.0) -> None:
    """One connection to the Hub's host before any request, so that an offline machine is
    told so at once, not after the Hub client's retries (about 23 s per request). Skipped
    behind a proxy (the proxy resolves the host) and once it has worked."""
    host = _hub_host()
    if host in _reached or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        raise _offline(host, e) from None
    _reached.add(host)


def _hub_tree(repo_id: str, token: str | None) -> list[tuple[str, int]]:
    from huggingface_hub import HfApi

    reach_hub()
    return [(f.path, int(f.size)) for f in HfApi().list_repo_tree(repo_id, recursive=True, repo_type="dataset",
                                                                   token=token)
            if getattr(f, "size", None) is not None]


def _hub_download(repo_id: str, filename: str, local_dir: str, token: str | None) -> str:
    from huggingface_hub import hf_hub_download

    reach_hub()
    return hf_hub_download(repo_id, filename, repo_type="dataset", local_dir=local_dir, token=token)


@dataclass
class PlannedFile:
    repo: str
    path: str  # in the repository
    size: int  # bytes, from the Hub
    local: Path  # where it goes
    kind: str  # "metadata" or "archive"

    @property
    def here(self) -> bool:
        """Already fetched whole (same size as on the Hub)."""
        return self.local.is_file() and self.local.stat().st_size == self.size


@dataclass
class FetchPlan:
    """What a fetch will download, and whether it fits."""

    name: str
    dest: Path
    files: list[PlannedFile]
    expected_posts: int  # about, from the preset (0: unknown)
    free_bytes: int
    staging: Path
    staging_free: int
    notes: list[str] = field(default_factory=list)

    @property
    def to_fetch(self) -> list[PlannedFile]:
        return [f for f in self.files if not f.here]

    @property
    def bytes_to_fetch(self) -> int:
        return sum(f.size for f in self.to_fetch)

    def describe(self) -> str:
        n_arch = sum(f.kind == "archive" for f in self.files)
        meta = [f for f in self.files if f.kind == "metadata"]
        lines = [f"{self.name}: {len(meta)} metadata file(s) ({sum(f.size for f in meta) / GB:.2f} GB) and "
                 f"{n_arch} image archive(s) ({sum(f.size for f in self.files if f.kind == 'archive') / GB:.2f} GB)"]
        here = len(self.files) - len(self.to_fetch)
        lines.append(f"to download: {len(self.to_fetch)} file(s), {self.bytes_to_fetch / GB:.2f} GB"
                     + (f" ({here} already in {self.dest})" if here else f", into {self.dest}"))
        if self.expected_posts:
            lines.append(f"these archives hold about {self.expected_posts:,} posts")
        lines.append(f"free space: {self.free_bytes / GB:.1f} GB at the destination, "
                     f"{self.staging_free / GB:.1f} GB on the local disk ({self.staging})")
        return "\n".join(lines + self.notes)

    def check_space(self, margin: float = 1 * GB) -> None:
        """Refuse a fetch that will not fit the destination, or whose largest file will not
        fit the local disk it is downloaded to first."""
        if self.bytes_to_fetch + margin > self.free_bytes:
            raise OSError(f"{self.bytes_to_fetch / GB:.2f} GB to download but {self.free_bytes / GB:.2f} GB free at "
                          f"{self.dest} (1 GB kept spare): fetch fewer archives or free some space")
        largest = max((f.size for f in self.to_fetch), default=0)
        if largest and largest + margin > self.staging_free:
            raise OSError(f"the largest file is {largest / GB:.2f} GB but {self.staging_free / GB:.2f} GB are free on "
                          f"the local disk at {self.staging}, where each file is downloaded first")


def _free(path: Path) -> int:
    p = path
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def resolve_preset(mirror: str, repo: str = "", archives: str = "", metadata: str = "",
                   metadata_repo: str = "") -> MirrorPreset:
    """A preset by name, or `custom` from the given repository and patterns."""
    if mirror in MIRRORS:
        return MIRRORS[mirror]
    if mirror not in ("custom", ""):
        raise ValueError(f"unknown mirror {mirror!r}; known: {', '.join(MIRRORS)}, or 'custom'")
    if not repo:
        raise ValueError("a custom mirror needs its repository (HF_DATASET, 'owner/name')")
    return MirrorPreset(repo=repo, archives=archives or "*.tar", metadata=metadata or "*.parquet",
                        metadata_repo=metadata_repo)


def plan_fetch(preset: MirrorPreset, dest: str | os.PathLike, n_archives: int, token: str | None = None,
               list_files: Callable[[str, str | None], list[tuple[str, int]]] | None = None,
               staging: str | os.PathLike | None = None, name: str = "") -> FetchPlan:
    """The metadata files of `preset` and its first `n_archives` archives (in name order, so a
    larger N later adds to the first), with their sizes, as they would land under `dest`."""
    list_files = list_files or _hub_tree
    dest = Path(dest)

    def listing(repo: str) -> list[tuple[str, int]]:
        try:
            return sorted(list_files(repo, token))
        except Exception as e:
            raise _access_error(e, repo, token, "its file list") from e

    image_files = listing(preset.repo)
    meta_files = image_files if preset.meta_repo == preset.repo else listing(preset.meta_repo)
    meta = [(p, s) for p, s in meta_files if match(p, preset.metadata)]
    tars = [(p, s) for p, s in image_files if match(p, preset.archives)][: max(0, n_archives)]
    if not meta:
        raise ValueError(f"{preset.meta_repo}: no metadata file matches {preset.metadata!r} (files: "
                         f"{', '.join(p for p, _ in meta_files[:10])} ...)")
    if not tars:
        raise ValueError(f"{preset.repo}: no image archive matches {preset.archives!r} (files: "
                         f"{', '.join(p for p, _ in image_files[:10])} ...)")
    meta_dest = dest if preset.meta_repo == preset.repo else dest / "metadata-repo"
    files = ([PlannedFile(preset.meta_repo, p, s, meta_dest / p, "metadata") for p, s in meta]
             + [PlannedFile(preset.repo, p, s, dest / p, "archive") for p, s in tars])
    staging = Path(staging) if staging else Path(tempfile.gettempdir()) / "animetag-hub"
    notes = []
    if n_archives > len(tars):
        notes.append(f"only {len(tars)} archive(s) match {preset.archives!r}, not {n_archives}")
    return FetchPlan(name or preset.repo, dest, files, len(tars) * preset.posts_per_archive, _free(dest), staging,
                     _free(staging), notes)


def fetch(plan: FetchPlan, token: str | None = None,
          download: Callable[[str, str, str, str | None], str] | None = None) -> tuple[list[Path], list[Path]]:
    """Download what the plan lists and is not here yet; returns (metadata files, archives).
    Each file goes to the local staging folder first, then into the destination under a
    temporary name, renamed when whole (an interrupted fetch leaves no half file behind)."""
    download = download or _hub_download
    plan.check_space()
    for f in plan.to_fetch:
        plan.staging.mkdir(parents=True, exist_ok=True)
        try:
            got = Path(download(f.repo, f.path, str(plan.staging), token)).resolve()  # the file, not a link
        except Exception as e:
            raise _access_error(e, f.repo, token, f.path) from e
        f.local.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.local.with_name(f.local.name + ".partial")
        shutil.move(str(got), tmp)
        os.replace(tmp, f.local)
    return ([f.local for f in plan.files if f.kind == "metadata"],
            [f.local for f in plan.files if f.kind == "archive"])
