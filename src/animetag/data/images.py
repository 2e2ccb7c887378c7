"""Image preparation shared by the subset build and by tagging, so both see the same pixels.

One preprocessing, the WD taggers' own (SmilingWolf's demo, dghs-imgutils): the whole image
decoded at full size, first frame, odd modes to RGB (transparency onto white), padded to a
white square (centred), then one bicubic resize of the square to the model's size. Beyond
that reference: EXIF orientation is applied first, and a square that would exceed
`max_pixels` (a very long, thin image) is resized before it is padded.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

PAD_COLOUR = (255, 255, 255)
RESAMPLE = Image.Resampling.BICUBIC  # the WD taggers' resize filter
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image that cannot be used; `reason` is a short code, the message the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode as RGB; transparent pixels become white."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*PAD_COLOUR, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = a.max() or 1.0
        return Image.fromarray((a * (255.0 / hi)).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")
    return im


def pad_square(im: Image.Image) -> Image.Image:
    """Centre the image on a white square (the WD/Camie taggers' convention)."""
    w, h = im.size
    if w == h:
        return im
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), PAD_COLOUR)
    canvas.paste(im, ((side - w) // 2, (side - h) // 2))
    return canvas


def open_rgb_square(src: str | os.PathLike | bytes, size: int, max_pixels: int = 64_000_000) -> Image.Image:
    """Decode, convert, pad and resize one image to `size` x `size` RGB.

    Raises ImageError with reason `missing_file`, `too_large` (checked before decoding),
    `corrupt_image` or `not_an_image`; its message names the file.
    """
    return square_resize(open_rgb(src, max_pixels), size, max_pixels)


def open_rgb(src: str | os.PathLike | bytes, max_pixels: int = 64_000_000) -> Image.Image:
    """Decode one image at full size as RGB: the first frame, EXIF orientation applied,
    transparent pixels on white. Raises ImageError as `open_rgb_square` does."""
    try:
        return _open_rgb(src, max_pixels)
    except ImageError as e:
        if isinstance(src, bytes):
            raise
        raise ImageError(e.reason, f"{src}: {e}") from None


def _open_rgb(src, max_pixels: int) -> Image.Image:
    try:
        f = io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb")
    except OSError as e:
        raise ImageError("missing_file", str(e)) from None
    with f:
        try:
            im = Image.open(f)
        except Image.DecompressionBombError as e:  # Pillow's own limit, from the header alone
            raise ImageError("too_large", str(e)) from None
        except Image.UnidentifiedImageError as e:
            raise ImageError("not_an_image", str(e)) from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError("corrupt_image", str(e)) from None
        try:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError("too_large", f"{w}x{h} pixels is over the limit of {max_pixels}")
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            # no JPEG draft (DCT-domain downscaling): it is faster, but moves scores by up to
            # 0.05 against the reference preprocessing that WD-tagger clients apply
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = to_rgb(im)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageError("corrupt_image", str(e) or type(e).__name__) from None
    return rgb


def square_resize(im: Image.Image, size: int, max_pixels: int = 64_000_000) -> Image.Image:
    """RGB, padded to a white square, resized to size x size (bicubic, as the WD taggers).

    Where the white square would be larger than `max_pixels` (a long, thin image: 1000x30000
    pads to 900M pixels), the image is resized first, its longest side to `size`, and padded
    after: memory stays bounded by the decoded image, and only the pixels along the image's
    edge can differ from padding first."""
    im = to_rgb(im)
    side = max(im.size)
    if side * side > max_pixels:
        w, h = im.size
        im = im.resize((max(1, round(w * size / side)), max(1, round(h * size / side))), RESAMPLE)
    square = pad_square(im)
    return square if square.size == (size, size) else square.resize((size, size), RESAMPLE)


def load_array(src: str | os.PathLike | bytes | np.ndarray, size: int) -> np.ndarray:
    """One image (file, bytes or uint8 array) as a uint8 (size, size, 3) array, prepared as for training."""
    if isinstance(src, np.ndarray):
        return np.asarray(square_resize(Image.fromarray(src.astype(np.uint8)), size), dtype=np.uint8)
    return np.asarray(open_rgb_square(src, size), dtype=np.uint8)


def encode_jpeg(im: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def prepare_for_shard(args: tuple) -> tuple[int, bytes | None, str, str, str]:
    """Worker: (id, path or archive member, size, max_pixels, quality) -> (id, JPEG bytes or
    None, reason, detail, perceptual hash of the square or ""). A member of a tar archive is
    read from it by offset."""
    pid, src, size, max_pixels, quality = args
    try:
        if hasattr(src, "read"):  # an archives.Member
            try:
                data = src.read()
            except OSError as e:
                raise ImageError("corrupt_image", f"{src}: {e}") from None
            try:
                im = open_rgb_square(data, size, max_pixels)
            except ImageError as e:
                raise ImageError(e.reason, f"{src}: {e}") from None
        else:
            im = open_rgb_square(Path(src), size, max_pixels)
    except ImageError as e:
        return pid, None, e.reason, str(e), ""
    from animetag.data.families import phash  # imagehash loads scipy: only in the workers that decode

    return pid, encode_jpeg(im, quality), "", "", phash(im)


def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Pillow's bicubic kernel (a = -0.5), support 2."""
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) weights of Pillow's bicubic resize along one axis, antialiased as
    Pillow does it (the kernel widened by the scale when shrinking): `W @ column` resizes a
    column as `Image.resize(..., BICUBIC)` does, before Pillow's rounding to 8 bits. Applied
    to both axes inside an exported model, it lets a tool feed another size."""
    scale = n_in / n_out
    support = 2.0 * max(scale, 1.0)
    w = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        k = _bicubic((j - center + 0.5) / max(scale, 1.0))
        w[i, lo:hi] = k / k.sum()
    return w
