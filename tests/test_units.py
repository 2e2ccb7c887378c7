"""Direct tests of the small modules the end-to-end tests only pass through: archives,
shards, vocab, plots and the benchmarks' arithmetic."""

import json

import numpy as np
import pandas as pd
import pytest

from animetag.data.archives import Member, TarIndex, image_key
from animetag.vocab import category_name, n_ratings, rating_labels, rating_rows, split_outputs, tag_rows, wd_sorted

MD5 = "0123456789abcdef0123456789abcdef"


def _tar(path, members: list[tuple[str, bytes]]):
    from conftest import write_tar

    return write_tar(path, members)


# -- archives --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, key", [
    ("123.jpg", 123), ("images/0042/7.WEBP", 7), (f"{MD5.upper()}.png", MD5), ("123.txt", None),
    ("cover.jpg", None), (".jpg", None), ("12a.jpg", None), (f"{MD5[:-1]}.jpg", None),
])
def test_an_image_is_named_by_its_id_or_md5_and_nothing_else(name, key):
    assert image_key(name) == key


def test_a_tar_index_reads_members_in_place_and_the_last_duplicate_wins(tmp_path):
    a = _tar(tmp_path / "0000.tar", [("1.jpg", b"first"), ("notes.txt", b"x"), (f"{MD5}.webp", b"by md5"),
                                      ("1.jpg", b"second")])
    b = _tar(tmp_path / "0001.tar", [("2.png", b"two"), ("1.jpg", b"third")])
    index = TarIndex.scan([a, b])
    assert index.find(1).read() == b"third" and index.duplicates == 2  # appended twice, then in the next archive
    assert index.find(2).read() == b"two" and index.find(99, MD5.upper()).read() == b"by md5"
    assert index.find(99) is None and len(index) == 3 and index.truncated == []
    with pytest.raises(ValueError, match="only uncompressed .tar archives"):
        TarIndex.scan([tmp_path / "x.tar.gz"])


def test_an_archive_cut_off_keeps_its_whole_members_and_is_named(tmp_path):
    full = _tar(tmp_path / "0000.tar", [("1.jpg", b"a" * 600), ("2.jpg", b"b" * 600), ("3.jpg", b"c" * 600)])
    data = full.read_bytes()
    cut = tmp_path / "0001.tar"
    cut.write_bytes(data[: 512 * 5 + 100])  # inside the third member's data
    index = TarIndex.scan([cut])
    assert index.truncated == [str(cut)] and index.find(1).read() == b"a" * 600
    with pytest.raises(OSError, match="ends .* bytes early"):
        Member(str(cut), "3.jpg", 512 * 5, 600).read()


# -- shards ----------------------------------------------------------------------------------

def test_shards_round_trip_ids_jpegs_and_labels_in_round_robin(tmp_path):
    from animetag.data.shards import ShardWriter, list_shards, shard_names
    from animetag.training.tensorflow_backend import parse_example

    assert shard_names("val", 5, 2) == [f"val-{i:05d}-of-00003.tfrecord" for i in range(3)]
    assert shard_names("test", 0, 4) == ["test-00000-of-00001.tfrecord"]
    (tmp_path / "shards").mkdir()
    w = ShardWriter(tmp_path / "shards", "train", 5, per_shard=2)
    for i in range(5):
        w.write(100 + i, bytes([i]) * 3, [i % 3, 4])
    w.close()
    import tensorflow as tf

    files = list_shards(tmp_path, "train")
    assert len(files) == 3
    got = {}
    for k, f in enumerate(files):
        for ser in tf.data.TFRecordDataset(f):
            jpeg, y, pid = parse_example(ser, 6)
            got[int(pid)] = (k, bytes(jpeg.numpy()), y.numpy().tolist())
    assert sorted(got) == [100, 101, 102, 103, 104]
    assert [got[100 + i][0] for i in range(5)] == [0, 1, 2, 0, 1]  # one shard after another
    assert got[102] == (2, b"\x02" * 3, [0, 0, 1, 0, 1, 0])
    with pytest.raises(FileNotFoundError, match="no 'val' shards"):
        list_shards(tmp_path, "val")


# -- vocab -----------------------------------------------------------------------------------

def _vocab(cats):
    return pd.DataFrame({"tag_id": range(len(cats)), "name": [f"t{i}" for i in range(len(cats))],
                         "category": cats, "count": range(len(cats), 0, -1)})


def test_rating_rows_come_first_or_not_at_all():
    v = pd.concat([rating_rows({"g": 5, "e": 1}), _vocab([0, 0, 4])], ignore_index=True)
    assert n_ratings(v) == 4 and v["count"].tolist()[:4] == [5, 0, 0, 1]
    assert tag_rows(v)["name"].tolist() == ["t0", "t1", "t2"] and n_ratings(_vocab([0, 4])) == 0
    with pytest.raises(ValueError, match="must come first"):
        n_ratings(pd.concat([_vocab([0]), rating_rows({})], ignore_index=True))
    with pytest.raises(ValueError, match="3 rating rows"):
        n_ratings(rating_rows({}).iloc[:3])
    y = np.arange(14).reshape(2, 7)
    r, t = split_outputs(y, 4)
    assert r.tolist() == [[0, 1, 2, 3], [7, 8, 9, 10]] and t.tolist() == [[4, 5, 6], [11, 12, 13]]


def test_wd_order_is_ratings_general_characters_then_the_rest_by_count():
    v = pd.DataFrame({"tag_id": range(6), "name": list("abcdef"), "category": [4, 0, 3, 9, 0, 4],
                      "count": [9, 1, 5, 2, 7, 9]})
    assert wd_sorted(v)["name"].tolist() == ["d", "e", "b", "a", "f", "c"]
    assert [category_name(c) for c in (0, 4, 9, 3, 42)] == ["general", "character", "rating", "copyright", "42"]
    assert rating_labels(np.array([[0, 1, 0, 0, 1], [0, 0, 0, 0, 1]]), 4).tolist() == [1, -1]


# -- plots -----------------------------------------------------------------------------------

def test_each_figure_shows_what_it_is_given_and_saves_as_png(tmp_path):
    from animetag.evaluation import plots

    hist = pd.DataFrame({"epoch": range(3), "loss": [0.3, 0.2, 0.1], "val_loss": [0.3, 0.25, 0.2],
                         "val_f1_micro": [0.1, 0.2, 0.3], "val_f1_macro": [0.05, 0.1, 0.2]})
    fig = plots.history(hist, {"f1_micro": 0.15, "f1_macro": 0.02})
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    assert any(list(ln.get_ydata()) == [0.3, 0.2, 0.1] for ln in lines)
    saved = plots.save(fig, tmp_path / "figs", "history")
    assert saved.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and repr(saved).startswith("figure saved:")
    assert plots.save(fig, None, "x") is None
    counts = pd.DataFrame({"name": [f"t{i}" for i in range(50)], "category": 0, "count": np.arange(50, 0, -1) ** 2})
    fig = plots.rank_frequency(counts, kept=10, n_posts=3000)
    assert max(len(ln.get_xdata()) for ax in fig.axes for ln in ax.get_lines()) == 50
    wrapped = plots.wrap_caption("word, " * 80, width=20, max_lines=3)
    assert len(wrapped.split("\n")) == 3 and wrapped.endswith(" ...")
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=(60, 3)) < 0.3).astype(int)
    fig = plots.f1_vs_threshold(y, np.clip(y * 0.5 + rng.uniform(size=y.shape) * 0.5, 0, 1), {"0.5": 0.5})
    assert fig.axes and any(ln.get_xdata()[0] == 0.5 for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 2)


# -- benchmarks ------------------------------------------------------------------------------

def test_the_rates_an_accelerator_needs_follow_its_peak_and_three_passes_per_step():
    from animetag.evaluation.benchmarks import UTILISATION, needed_rates
    from animetag.evaluation.published import PEAK_TFLOPS

    got = needed_rates(10 ** 9)  # 1 GFLOP per forward pass
    for name, (low, high) in got.items():
        assert low == pytest.approx(PEAK_TFLOPS[name] * 1e12 * UTILISATION[0] / 3e9, rel=1e-3)
        assert high / low == pytest.approx(UTILISATION[1] / UTILISATION[0], rel=1e-2)
    assert needed_rates(2 * 10 ** 9)["T4"][0] == pytest.approx(got["T4"][0] / 2, rel=1e-2)


@pytest.mark.slow
def test_the_training_benchmark_prints_rates_side_by_side_from_the_command_line(subset_dir, capsys):
    from animetag.cli import main

    assert main(["bench", "train", "--data", str(subset_dir), "--profile", "tiny", "--image-size", "32",
                 "--batch-size", "8", "--steps", "6", "--fit-steps", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] and out["image_size"] == 32 and out["batch_size"] == 8 and out["precision"] == "float32"
    assert out["host_augmentation_slowdown"] == pytest.approx(
        out["host_feed_img_s"] / out["host_feed_if_augmenting_on_host_img_s"], rel=0.01)
    assert out["step_img_s"] > 0 and out["fit_img_s"] > 0 and 0 < out["input_efficiency"]
    assert set(out["needed_img_s"]) == {"T4", "L4", "A100"}
