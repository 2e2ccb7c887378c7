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


def write_subset(out, sizes: dict, image_size: int = 16, n_tags: int = 5, seed: int = 0):
    """A minimal built subset with exact split sizes (random JPEGs, random labels whose rate
    depends on the image's brightness, so there is something to learn): the files `train`
    and `evaluate` read, in the format `build_subset` writes."""
    import io
    import json
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from PIL import Image

    from animetag.shards import ShardWriter

    out = Path(out)
    (out / "shards").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [f"tag_{j}" for j in range(n_tags)]
    rows, pid = [], 1
    for split, n in sizes.items():
        writer = ShardWriter(out / "shards", split, n, per_shard=max(1, n // 2))
        for _ in range(n):
            level = rng.uniform(0, 1)
            img = (rng.uniform(0, 255 * level, size=(image_size, image_size, 3))).astype("uint8")
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=95)
            labels = [j for j in range(n_tags) if rng.uniform() < 0.15 + 0.6 * level * (j % 2)]
            writer.write(pid, buf.getvalue(), labels)
            rows.append({"id": pid, "md5": f"{pid:032x}", "split": split, "file": f"{pid}.jpg",
                         "tags": " ".join(names[j] for j in labels)})
            pid += 1
        writer.close()
    manifest = pd.DataFrame(rows)
    manifest.to_csv(out / "manifest.csv", index=False)
    counts = [int(manifest["tags"].str.split().apply(lambda t, n=n: n in t).sum()) for n in names]
    pd.DataFrame({"tag_id": range(n_tags), "name": names, "category": 0, "count": counts}).to_csv(
        out / "tags.csv", index=False)
    (out / "subset.json").write_text(json.dumps({"settings": {"image_size": image_size, "categories": ["general"]},
                                                 "counts": {"kept": len(rows)}, "images_root": str(out)}))
    return out
