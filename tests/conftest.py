import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    """A small sample with every kind of broken record (generated once per session)."""
    from animetag.sample import generate

    root = tmp_path_factory.mktemp("sample") / "sample"
    generate(root, n_images=240, seed=1)
    return root


@pytest.fixture(scope="session")
def subset_dir(sample_root, tmp_path_factory):
    """The sample's subset at 32 px with the top-40 tags."""
    from animetag.config import SubsetConfig
    from animetag.subset import build_subset

    out = tmp_path_factory.mktemp("subset") / "subset"
    build_subset(sample_root / "metadata" / "posts.json", sample_root, out,
                 SubsetConfig(top_k=40, image_size=32, images_per_shard=64, workers=2), progress=False)
    return out
