"""Fetch part of a public Danbooru mirror from the Hugging Face Hub: its metadata table and
the first N of its image archives (tar files of `ID.ext` members), which `animetag subset`
then reads in place. For Colab; `huggingface_hub` is imported only when used (Colab has it).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from pathlib import Path


def _hub_list(repo_id: str) -> list[str]:
    from huggingface_hub import HfApi

    return HfApi().list_repo_files(repo_id, repo_type="dataset")


def _hub_download(repo_id: str, filename: str, local_dir: str) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, repo_type="dataset", local_dir=local_dir)


def fetch_mirror(repo_id: str, dest: str | os.PathLike, n_archives: int, archives: str = "*.tar",
                 metadata: str = "*.parquet", list_files: Callable[[str], list[str]] | None = None,
                 download: Callable[[str, str, str], str] | None = None) -> tuple[list[Path], list[Path]]:
    """Download the metadata files matching `metadata` and the first `n_archives` archives
    matching `archives` (in name order, so a second call with a larger N adds to the first)
    into `dest`; returns (metadata files, archives). Files already there are not fetched again
    (the Hub's own cache and resumable downloads handle interruptions)."""
    list_files, download = list_files or _hub_list, download or _hub_download
    files = sorted(list_files(repo_id))
    meta = [f for f in files if fnmatch.fnmatch(f, metadata)]
    tars = [f for f in files if fnmatch.fnmatch(f, archives)][: max(0, n_archives)]
    if not meta:
        raise ValueError(f"{repo_id}: no metadata file matches {metadata!r} (files: {', '.join(files[:10])} ...)")
    if not tars:
        raise ValueError(f"{repo_id}: no image archive matches {archives!r} (files: {', '.join(files[:10])} ...)")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    def get(name: str) -> Path:
        local = dest / name
        return local if local.is_file() else Path(download(repo_id, name, str(dest)))

    return [get(f) for f in meta], [get(f) for f in tars]
