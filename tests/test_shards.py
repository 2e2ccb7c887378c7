"""The subset's shards read without TensorFlow: every record, its id, image and labels as
TensorFlow reads them; a damaged or cut-off shard named; `peek` in a process with no
TensorFlow at all."""

import struct
import subprocess
import sys

import numpy as np
import pytest


def test_the_shards_read_without_tensorflow_are_what_tensorflow_reads(subset_dir):
    tf = pytest.importorskip("tensorflow")
    from animetag.data.shards import decode_example, list_shards, read_records
    from animetag.folders import SubsetFolder
    from animetag.training.tensorflow_backend import parse_example

    n_outputs = SubsetFolder(subset_dir).n_outputs
    n = 0
    for split in ("train", "val", "test"):
        for shard in list_shards(subset_dir, split):
            ours = list(read_records(shard, verify=True))
            theirs = [r.numpy() for r in tf.data.TFRecordDataset(shard)]
            assert ours == theirs
            for record in ours:
                pid, jpeg, idx = decode_example(record)
                t_jpeg, t_y, t_id = parse_example(tf.constant(record), n_outputs)
                assert pid == int(t_id) and jpeg == t_jpeg.numpy()
                assert sorted(idx) == np.flatnonzero(t_y.numpy()).tolist()
                n += 1
    assert n == len(SubsetFolder(subset_dir).manifest)


def test_a_damaged_or_cut_off_shard_is_named_with_the_place(subset_dir, tmp_path):
    from animetag.data.shards import list_shards, read_records

    data = open(list_shards(subset_dir, "val")[0], "rb").read()
    first = struct.unpack("<Q", data[:8])[0]
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(data[: 16 + first + 20])  # the second record breaks off
    with pytest.raises(ValueError, match=rf"cut\.tfrecord: cut off .* at byte {16 + first}"):
        list(read_records(cut))
    bent = bytearray(data)
    bent[16 + first] ^= 0xFF  # the second record's length header
    (tmp_path / "bent.tfrecord").write_bytes(bytes(bent))
    with pytest.raises(ValueError, match="damaged length header"):
        list(read_records(tmp_path / "bent.tfrecord"))
    flipped = bytearray(data)
    flipped[20] ^= 0x01  # a byte inside the first record
    (tmp_path / "flipped.tfrecord").write_bytes(bytes(flipped))
    assert len(list(read_records(tmp_path / "flipped.tfrecord"))) >= 1  # read unless asked to verify
    with pytest.raises(ValueError, match="at byte 0 is damaged"):
        list(read_records(tmp_path / "flipped.tfrecord", verify=True))


def test_peek_runs_where_tensorflow_cannot_be_imported(subset_dir):
    code = ("import sys\n"
            "sys.modules['tensorflow'] = None  # `import tensorflow` fails, as on a JAX-only machine\n"
            "from animetag.data.shards import peek\n"
            f"ids, images, labels = peek({str(subset_dir)!r}, 'val', 5)\n"
            "print(len(ids), images.shape, labels.shape, int(labels.sum() > 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    n, *_ = out.stdout.split()
    assert n == "5" and "(5, 32, 32, 3)" in out.stdout and out.stdout.strip().endswith("1")


def test_shards_are_written_without_tensorflow_as_tensorflow_writes_them(tmp_path):
    """Our TFRecord frames are byte for byte TensorFlow's for the same records (CRC-32C of
    lengths and payloads included), and TensorFlow parses our Examples, negative ids, empty
    images and long label lists too."""
    tf = pytest.importorskip("tensorflow")
    import os

    from animetag.data import shards

    records = [(5, os.urandom(3000), [0, 3, 99]), (-7, b"", []), (2**40, os.urandom(100_000), list(range(300)))]
    w = shards.ShardWriter(tmp_path, "train", len(records), 2)
    for r in records:
        w.write(*r)
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in w.paths]  # no .part left
    got = {}
    for path in w.paths:
        payloads = list(shards.read_records(path, verify=True))
        ref = tmp_path / ("tf-" + path.name)
        with tf.io.TFRecordWriter(str(ref)) as tw:
            for p in payloads:
                tw.write(p)
        assert ref.read_bytes() == path.read_bytes()
        for r in tf.data.TFRecordDataset(str(path)):
            f = tf.train.Example.FromString(r.numpy()).features.feature
            got[f["id"].int64_list.value[0]] = (f["image"].bytes_list.value[0], list(f["labels"].int64_list.value))
    assert got == {pid: (jpeg, labels) for pid, jpeg, labels in records}
    # the pure-Python CRC where google-crc32c is missing gives the same
    big = os.urandom(5000)
    fast, shards._FAST = shards._FAST, None
    try:
        slow = shards.crc32c(big)
    finally:
        shards._FAST = fast
    assert slow == shards.crc32c(big) and shards.crc32c(b"123456789") == 0xE3069283  # the check value
