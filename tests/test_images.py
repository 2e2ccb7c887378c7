"""Image preparation under hostile input: Pillow's decompression-bomb limit and long, thin
images must end as a recorded reason or bounded memory, never as an escaped error."""

import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

from animetag.data.images import ImageError, open_rgb_square, prepare_for_shard, square_resize


def _png_claiming(path, width, height):
    """A small PNG whose header claims width x height (Pillow reads only the header to open it)."""
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr: ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4: ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13: ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_is_a_reason_naming_the_file(tmp_path):
    bomb = _png_claiming(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageError, match="bomb.png") as e:
        open_rgb_square(bomb, 64, max_pixels=10**12)  # past our limit, Pillow's own still stops it
    assert e.value.reason == "too_large"
    pid, jpeg, reason, detail, phash = prepare_for_shard((7, str(bomb), 64, 10**12, 90))
    assert (pid, jpeg, reason, phash) == (7, None, "too_large", "") and "bomb.png" in detail


def test_long_thin_image_is_resized_before_padding_with_bounded_memory(tmp_path):
    thin = tmp_path / "thin.png"
    Image.new("RGB", (1000, 30000), (200, 30, 30)).save(thin)
    code = textwrap.dedent(f"""
        import resource
        from animetag.data.images import open_rgb_square
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        im = open_rgb_square({str(thin)!r}, 256)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(im.size, (after - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    size, grown_mb = out.stdout.rsplit(" ", 1)
    print("peak memory growth for a 1000x30000 PNG:", grown_mb, "MB")
    assert size.strip() == "(256, 256)"
    assert int(grown_mb) < 400  # the padded square alone would take 2.7 GB


def test_resize_first_only_changes_the_pixels_at_the_edge():
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, size=(300, 100, 3), dtype=np.uint8))
    reference = np.asarray(square_resize(im, 60), dtype=np.float32)  # pad, then one resize
    bounded = np.asarray(square_resize(im, 60, max_pixels=1000), dtype=np.float32)  # resize, then pad
    assert reference.shape == bounded.shape == (60, 60, 3)
    assert (bounded[:, :19] == 255).all() and (bounded[:, 41:] == 255).all()  # white margins
    inner = np.abs(reference - bounded)[:, 24:37]
    assert inner.mean() < 1.0  # the same picture inside; the bicubic filter differs only near the edge
