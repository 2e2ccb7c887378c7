"""The built-in Danbooru-shaped sample: metadata in the API shape, images in the Danbooru20xx
layout, deterministic from a seed.

Each general tag has a visual meaning a small CNN can learn (a figure whose hair and eye
colours, hair length and background are tags, and one glyph, a shape in a colour, per
other tag). The sample reproduces the thesis's five data problems on purpose, each with a
known strength written to `sample.json`:

- overlapping tags: `very_long_hair` implies `long_hair`; every `*_background` colour
  implies `simple_background`; `hair_ribbon` implies `ribbon` (told apart by position);
- abstract tags: `ABSTRACT_TAGS` are assigned at random and drawn nowhere;
- pseudo-hierarchy: a character fixes its hair colour, eye colour, sex and copyright;
- class imbalance: glyph tags follow p(rank) = 0.5 * rank^-0.62, colours a skewed
  categorical, so the top-100 run from about 75% to a few percent;
- missing tags: every true general tag is left out of the metadata with probability
  `MISSING_RATE`; the true tags are kept in `truth.jsonl`.
Unless `clean`, a few records are broken the way real dumps are (see `BROKEN`).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from animetag.folders import write_json_atomic

MISSING_RATE = 0.10
ABSTRACT_TAGS = ("looking_at_viewer", "alternate_costume", "parody", "cosplay",
                 "official_alternate_costume", "genderswap")
ABSTRACT_RATES = (0.35, 0.06, 0.04, 0.03, 0.03, 0.02)

HAIR = {  # tag: (colour, weight among people)
    "brown_hair": ((120, 72, 38), 0.20), "black_hair": ((28, 26, 34), 0.18),
    "blonde_hair": ((242, 212, 90), 0.17), "blue_hair": ((60, 110, 225), 0.09),
    "white_hair": ((236, 236, 242), 0.07), "pink_hair": ((246, 140, 190), 0.07),
    "purple_hair": ((135, 75, 190), 0.06), "red_hair": ((205, 40, 40), 0.05),
    "silver_hair": ((170, 176, 190), 0.04), "green_hair": ((60, 170, 80), 0.04),
    "orange_hair": ((245, 140, 40), 0.03),
}
EYES = {
    "blue_eyes": ((40, 90, 230), 0.22), "red_eyes": ((210, 30, 40), 0.18),
    "brown_eyes": ((110, 60, 30), 0.14), "green_eyes": ((40, 170, 60), 0.12),
    "purple_eyes": ((140, 60, 200), 0.10), "yellow_eyes": ((240, 210, 30), 0.09),
    "black_eyes": ((20, 20, 20), 0.06), "aqua_eyes": ((40, 210, 210), 0.05),
    "pink_eyes": ((245, 120, 180), 0.03), "orange_eyes": ((245, 130, 30), 0.01),
}
BACKGROUNDS = {  # tag: (colour, weight); the plain colours imply simple_background
    "white_background": ((255, 255, 255), 0.30), "grey_background": ((150, 150, 150), 0.08),
    "blue_background": ((150, 190, 240), 0.05), "pink_background": ((250, 200, 220), 0.04),
    "outdoors": (None, 0.15), "night": ((20, 24, 60), 0.06), "indoors": ((150, 110, 80), 0.08),
}
SIMPLE_BACKGROUNDS = ("white_background", "grey_background", "blue_background", "pink_background")
GLYPH_TAGS = (
    "breasts", "skirt", "shirt", "hair_ornament", "thighhighs", "gloves", "long_sleeves",
    "dress", "ribbon", "bow", "hat", "holding", "navel", "jewelry", "hair_ribbon",
    "school_uniform", "jacket", "hair_bow", "animal_ears", "weapon", "twintails", "ponytail",
    "braid", "flower", "sword", "tail", "earrings", "collarbone", "food", "frills", "boots",
    "serafuku", "bare_shoulders", "sleeveless", "pantyhose", "necktie", "wings", "hairband",
    "glasses", "pleated_skirt", "detached_sleeves", "shoes", "bag", "choker", "hood",
    "scarf", "belt", "cape", "umbrella", "heart", "armor", "horns", "halo", "fang", "mask",
    "book", "cup", "hair_flower", "sailor_collar", "apron", "petals", "water", "moon",
    "tree", "cat_ears", "fox_ears", "rabbit_ears", "striped", "polka_dot", "sweat", "tears",
    "ahoge", "star_(symbol)", "feathers", "gem", "crown", "chain", "candle", "leaf", "snow",
)
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "hbar", "vbar", "star", "hexagon")
GLYPH_COLOURS = ((220, 30, 30), (30, 150, 40), (30, 60, 220), (240, 200, 0), (200, 40, 200),
                 (0, 190, 200), (250, 120, 0), (40, 40, 40))
OVERLAP = {"very_long_hair": "long_hair", "hair_ribbon": "ribbon",
           **{b: "simple_background" for b in SIMPLE_BACKGROUNDS}}

CHARACTERS = (  # name, sex, hair, eyes, copyright
    ("hakurei_reimu", "girl", "black_hair", "red_eyes", "touhou"),
    ("kirisame_marisa", "girl", "blonde_hair", "yellow_eyes", "touhou"),
    ("remilia_scarlet", "girl", "purple_hair", "red_eyes", "touhou"),
    ("izayoi_sakuya", "girl", "silver_hair", "blue_eyes", "touhou"),
    ("hatsune_miku", "girl", "blue_hair", "aqua_eyes", "idolmaster"),
    ("artoria_pendragon_(fate)", "girl", "blonde_hair", "green_eyes", "fate_(series)"),
    ("tohsaka_rin", "girl", "black_hair", "blue_eyes", "fate_(series)"),
    ("emiya_shirou", "boy", "red_hair", "yellow_eyes", "fate_(series)"),
    ("shimakaze_(kancolle)", "girl", "blonde_hair", "brown_eyes", "kantai_collection"),
    ("hibiki_(kancolle)", "girl", "white_hair", "blue_eyes", "kantai_collection"),
    ("admiral_(kancolle)", "boy", "black_hair", "black_eyes", "kantai_collection"),
    ("gawr_gura", "girl", "white_hair", "blue_eyes", "hololive"),
    ("houshou_marine", "girl", "red_hair", "yellow_eyes", "hololive"),
    ("usada_pekora", "girl", "white_hair", "red_eyes", "hololive"),
    ("raiden_shogun", "girl", "purple_hair", "purple_eyes", "genshin_impact"),
    ("lumine_(genshin_impact)", "girl", "blonde_hair", "yellow_eyes", "genshin_impact"),
    ("aether_(genshin_impact)", "boy", "blonde_hair", "yellow_eyes", "genshin_impact"),
    ("shiroko_(blue_archive)", "girl", "silver_hair", "blue_eyes", "blue_archive"),
    ("pikachu", "none", "", "", "pokemon"),
    ("ash_ketchum", "boy", "black_hair", "brown_eyes", "pokemon"),
)
ARTISTS = ("kantoku", "ixy", "tony_taka", "mignon", "hews", "asanagi", "wlop", "sakimichan",
           "rella", "ningen_mame", "void_0", "nanahara_fuyuki")
META = {"highres": 0.55, "absurdres": 0.15, "commentary_request": 0.30, "translated": 0.08,
        "bad_id": 0.05, "lowres": 0.04}
# The rating follows what is drawn: the more of these glyphs an image shows, the less likely
# it is rated general (rows: none, one, two or more). It can be learnt, but not perfectly.
EXPOSURE_TAGS = ("navel", "bare_shoulders", "collarbone", "breasts")
RATING_BY_EXPOSURE = ({"g": 0.85, "s": 0.10, "q": 0.04, "e": 0.01},
                      {"g": 0.15, "s": 0.60, "q": 0.15, "e": 0.10},
                      {"g": 0.05, "s": 0.25, "q": 0.40, "e": 0.30})

# Broken records written unless `clean`: kind -> what the subset build must say about it.
BROKEN = {
    "truncated_image": "corrupt_image",
    "missing_file": "missing_file",
    "malformed_json": "malformed_record",
    "no_tags": "no_kept_tag",
    "duplicate_md5": "duplicate_md5",
}
ODD_MODES = ("CMYK", "L", "P", "RGBA", "GIF")


def glyph_table() -> dict[str, tuple[str, tuple[int, int, int]]]:
    """Each glyph tag's (shape, colour); distinct pairs, fixed whatever the seed."""
    out = {}
    for i, t in enumerate(GLYPH_TAGS):
        out[t] = (SHAPES[i % len(SHAPES)], GLYPH_COLOURS[(i // len(SHAPES) + i) % len(GLYPH_COLOURS)])
    return out


def glyph_rates() -> dict[str, float]:
    """Glyph tags' true rates: 0.5 * rank^-0.62 (a long tail, like Danbooru's)."""
    return {t: 0.5 * (i + 1) ** -0.62 for i, t in enumerate(GLYPH_TAGS)}


def all_general_tags() -> list[str]:
    return (["1girl", "1boy", "no_humans", "solo", "short_hair", "medium_hair", "long_hair",
             "very_long_hair", "simple_background"] + list(HAIR) + list(EYES) + list(BACKGROUNDS)
            + list(GLYPH_TAGS) + list(ABSTRACT_TAGS))


@dataclass
class Post:
    id: int
    rating: str
    truth: list[str]  # true general tags
    general: list[str]  # general tags as written in the metadata (some missing)
    character: list[str]
    copyright: list[str]
    artist: list[str]
    meta: list[str]
    hair: str
    eyes: str
    hair_len: str
    sex: str
    background: str
    glyphs: list[str]


def _choice(rng: np.random.Generator, table: dict[str, Any]) -> str:
    names = list(table)
    w = np.array([table[n][1] for n in names], dtype=float)
    return names[rng.choice(len(names), p=w / w.sum())]


def draw_post(rng: np.random.Generator, post_id: int) -> Post:
    """The true content of one post and its (incomplete) metadata tags."""
    truth: list[str] = []
    char = None
    if rng.random() < 0.35:
        w = np.array([(i + 1) ** -0.8 for i in range(len(CHARACTERS))])
        char = CHARACTERS[rng.choice(len(CHARACTERS), p=w / w.sum())]
    if char is not None:
        sex = char[1]
    else:
        u = rng.random()
        sex = "girl" if u < 0.80 else "boy" if u < 0.93 else "none"
    hair = eyes = hair_len = ""
    if sex != "none":
        truth += ["1girl" if sex == "girl" else "1boy", "solo"]
        hair = char[2] if char else _choice(rng, HAIR)
        eyes = char[3] if char else _choice(rng, EYES)
        if hair in HAIR:
            truth.append(hair)
        truth.append(eyes)
        u = rng.random()
        hair_len = ("short_hair" if u < (0.6 if sex == "boy" else 0.28) else
                    "medium_hair" if u < (0.9 if sex == "boy" else 0.42) else
                    "very_long_hair" if u < (0.95 if sex == "boy" else 0.66) else "long_hair")
        truth.append(hair_len)
        if hair_len == "very_long_hair":
            truth.append("long_hair")
    else:
        truth.append("no_humans")
    background = _choice(rng, BACKGROUNDS) if rng.random() < 0.66 else ""
    if background:
        truth.append(background)
        if background in SIMPLE_BACKGROUNDS:
            truth.append("simple_background")
    glyphs = [t for t, p in glyph_rates().items() if rng.random() < p]
    if "hair_ribbon" in glyphs and "ribbon" not in glyphs:
        truth.append("ribbon")  # overlap: implied, drawn only as the ribbon in the hair
    if sex == "none":
        glyphs = [g for g in glyphs if g not in ("hair_ribbon", "hair_bow", "hair_flower", "ahoge")]
    truth += glyphs
    truth += [t for t, p in zip(ABSTRACT_TAGS, ABSTRACT_RATES) if rng.random() < p]
    truth = list(dict.fromkeys(truth))
    general = [t for t in truth if rng.random() >= MISSING_RATE]
    character = [char[0]] if char else []
    copyright = [char[4]] if char else (["original"] if rng.random() < 0.3 else [])
    w = np.array([(i + 1) ** -1.0 for i in range(len(ARTISTS))])
    artist = [ARTISTS[rng.choice(len(ARTISTS), p=w / w.sum())]] if rng.random() < 0.9 else []
    meta = [t for t, p in META.items() if rng.random() < p]
    if "lowres" in meta:
        meta = [t for t in meta if t not in ("highres", "absurdres")]
    elif "absurdres" in meta and "highres" not in meta:
        meta.insert(0, "highres")
    p_rating = RATING_BY_EXPOSURE[min(2, sum(t in truth for t in EXPOSURE_TAGS))]
    rating = list(p_rating)[rng.choice(4, p=list(p_rating.values()))]
    return Post(post_id, rating, sorted(truth), sorted(general), character, copyright, artist,
                meta, hair, eyes, hair_len, sex, background, glyphs)


def _shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, col) -> None:
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
    elif shape == "square":
        d.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=col)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=col)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=col)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=max(2, int(r * 0.35)))
    elif shape == "cross":
        w = r * 0.35
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=col)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=col)
    elif shape == "hbar":
        d.rectangle([cx - r, cy - r * 0.3, cx + r, cy + r * 0.3], fill=col)
    elif shape == "vbar":
        d.rectangle([cx - r * 0.3, cy - r, cx + r * 0.3, cy + r], fill=col)
    elif shape == "star":
        pts = []
        for k in range(10):
            a = -np.pi / 2 + k * np.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        d.polygon(pts, fill=col)
    elif shape == "hexagon":
        d.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.arange(6) * np.pi / 3], fill=col)


def render(rng: np.random.Generator, post: Post, size: tuple[int, int]) -> Image.Image:
    """Draw the post's true content: background, figure (hair, eyes), one glyph per tag."""
    w, h = size
    bg = BACKGROUNDS.get(post.background, ((235, 225, 205), 0))[0]
    img = Image.new("RGB", (w, h), bg or (255, 255, 255))
    d = ImageDraw.Draw(img)
    if post.background == "outdoors":
        d.rectangle([0, 0, w, h * 0.6], fill=(120, 180, 250))
        d.rectangle([0, h * 0.6, w, h], fill=(80, 160, 70))
    s = min(w, h)
    cx, cy = w / 2 + rng.uniform(-0.08, 0.08) * w, h * 0.42
    head = s * 0.16
    if post.sex != "none":
        hair_col = HAIR.get(post.hair, ((110, 110, 110), 0))[0]
        length = {"short_hair": 0.2, "medium_hair": 0.8, "long_hair": 1.8, "very_long_hair": 2.9}[post.hair_len]
        d.rectangle([cx - head * 1.25, cy - head * 0.2, cx + head * 1.25, cy + head * length], fill=hair_col)
        body = (255, 160, 200) if post.sex == "girl" else (70, 90, 150)
        if post.sex == "girl":
            d.polygon([(cx, cy + head), (cx + head * 1.6, h), (cx - head * 1.6, h)], fill=body)
        else:
            d.rectangle([cx - head * 1.1, cy + head, cx + head * 1.1, h], fill=body)
        d.ellipse([cx - head, cy - head, cx + head, cy + head], fill=(255, 225, 200))
        d.ellipse([cx - head * 1.25, cy - head * 1.3, cx + head * 1.25, cy - head * 0.1], fill=hair_col)
        eye_col = EYES[post.eyes][0]
        for ex in (cx - head * 0.45, cx + head * 0.45):
            d.ellipse([ex - head * 0.22, cy - head * 0.05, ex + head * 0.22, cy + head * 0.4], fill=eye_col)
    table = glyph_table()
    for g in post.glyphs:
        shape, col = table[g]
        r = s * rng.uniform(0.065, 0.09)
        if g == "hair_ribbon":  # the ribbon's glyph, on the hair
            shape, col = table["ribbon"]
            gx, gy = cx + rng.uniform(-1, 1) * head, cy - head * 1.2
        else:
            gx, gy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        _shape(d, shape, gx, gy, r, col)
    if post.background == "night":
        for _ in range(6):
            x, y = rng.uniform(0, w), rng.uniform(0, h * 0.3)
            d.point([(x, y)], fill=(255, 255, 200))
    return img


def add_detail(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Line strokes, soft shading and grain over a rendered post, so that its JPEGs weigh and
    decode like real illustrations (25-40 KB at 256 px, quality 95) instead of flat shapes.
    For benchmarks: the detail carries no tag."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(40, 80))):
        pts = np.cumsum(rng.normal(0, 0.06 * min(w, h), size=(int(rng.integers(3, 8)), 2)), axis=0)
        pts += rng.uniform(0, 1, size=2) * (w, h)
        d.line([tuple(p) for p in pts], fill=tuple(int(c) for c in rng.integers(0, 90, size=3)),
               width=int(rng.integers(1, 3)))
    a = np.asarray(img, dtype=np.float32)
    field = Image.fromarray(rng.uniform(0, 255, size=(6, 6)).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    a = a * (0.75 + 0.25 * np.asarray(field, np.float32)[..., None] / 255.0)
    a += rng.normal(0, 6.0, size=a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=90, method=0)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def _odd_mode(img: Image.Image, mode: str) -> tuple[bytes, str]:
    """The image re-encoded in an odd mode, and its file extension."""
    if mode == "CMYK":
        return _encode(img.convert("CMYK"), "JPEG"), "jpg"
    if mode == "L":
        return _encode(img.convert("L"), "JPEG"), "jpg"
    if mode == "P":
        return _encode(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG"), "png"
    if mode == "RGBA":  # the white background made transparent
        rgba = img.convert("RGBA")
        a = np.array(rgba)
        white = (a[..., :3] > 250).all(-1)
        a[white, 3] = 0
        return _encode(Image.fromarray(a, "RGBA"), "PNG"), "png"
    # an animation: the first frame is the post, the second a different picture
    buf = io.BytesIO()
    other = Image.new("RGB", img.size, (0, 0, 0))
    img.save(buf, "GIF", save_all=True, append_images=[other], duration=100, loop=0)
    return buf.getvalue(), "gif"


def generate(out: str | Path, n_images: int = 600, seed: int = 0, clean: bool = False,
             detail: bool = False) -> dict[str, Any]:
    """Write the sample to `out`: `metadata/posts.json` (JSON lines), `512px/`, `original/`,
    `truth.jsonl` and `sample.json`. Returns the description written to `sample.json`.
    `detail`: images as complex as real illustrations (`add_detail`), for benchmarks."""
    out = Path(out)
    if n_images < (20 if clean else 40):
        raise ValueError(f"the sample needs at least {20 if clean else 40} images, not {n_images}")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "metadata").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ids = 4_000_000 + np.cumsum(rng.integers(1, 400, size=n_images))
    n_orig = max(1, n_images // 10)  # this many only as PNG/WebP originals
    broken = {} if clean else {
        "truncated_image": 3, "missing_file": 5, "no_tags": 7, "duplicate_md5": 11,
        "malformed_json": 13, **{f"mode_{m}": 17 + i for i, m in enumerate(ODD_MODES)},
    }
    records: list[tuple[dict[str, Any], str | None]] = []
    truth_lines: list[str] = []
    md5_of: dict[int, str] = {}
    recent: list[tuple[int, int, Post, Image.Image]] = []  # plain posts a variant may come from
    children: dict[int, dict[str, Any]] = {}
    for i, pid in enumerate(ids.tolist()):
        prng = np.random.default_rng([seed, pid])
        post = draw_post(prng, pid)
        w, h = int(prng.integers(220, 420)), int(prng.integers(220, 420))
        img = render(prng, post, (w, h))
        if detail:
            img = add_detail(img, prng)
        bucket = f"{pid % 1000:04d}"
        kind = next((k for k, j in broken.items() if j == i), None)
        family = None
        if kind is None and i < n_images - n_orig and recent:
            family = _family_member(np.random.default_rng([seed, pid, 7]), recent)
        if family:  # a variant of a recent post: its picture edited, its tags as the original's
            parent_i, parent_post, parent_img, edit, frng = family
            img, (w, h) = _edit(parent_img, edit, frng), parent_img.size
            post = _variant_post(parent_post, pid, frng)
            children[pid] = {"of": ids[parent_i].item(), "edit": edit}
        if kind and kind.startswith("mode_"):
            data, ext = _odd_mode(img, kind[5:])
            folder = "512px" if ext == "jpg" else "original"
        elif i >= n_images - n_orig:
            ext = "png" if i % 2 else "webp"
            data, folder = _encode(img, "PNG" if ext == "png" else "WEBP"), "original"
        else:
            quality = 80 if family and family[3] == "reupload" else 90
            ext, data, folder = "jpg", _encode(img, "JPEG", quality), "512px"
        md5 = hashlib.md5(data).hexdigest()
        if kind == "duplicate_md5":  # the same file posted twice
            src = ids[0].item()
            md5, data, ext, folder = md5_of[src], None, "jpg", "512px"
            shutil.copy(tmp / "512px" / f"{src % 1000:04d}" / f"{src}.jpg", _mk(tmp / folder / bucket) / f"{pid}.jpg")
        md5_of[pid] = md5
        if kind == "truncated_image":
            data = data[: len(data) // 3]
        if data is not None and kind != "missing_file":
            (_mk(tmp / folder / bucket) / f"{pid}.{ext}").write_bytes(data)
        rec = _record(i, pid, post, (w, h), md5, "png" if kind == "mode_P" else ext, kind, prng)
        if family and family[3] != "reupload":  # a re-upload is linked to nothing: only its pixels tell
            rec["parent_id"] = children[pid]["of"]
            records[family[0]][0]["has_children"] = True
        records.append((rec, kind))
        truth_lines.append(json.dumps({"id": pid, "general": post.truth}))
        if kind is None and not family and folder == "512px":
            recent = [*recent[-(FAMILY_WINDOW - 1):], (i, pid, post, img)]
    lines = []
    for rec, kind in records:
        line = json.dumps(rec)
        if kind == "malformed_json":
            line = line[: len(line) // 2]  # cut off mid-record, as a broken export is
        lines.append(line)
    (tmp / "metadata" / "posts.json").write_text("\n".join(lines) + "\n")
    (tmp / "truth.jsonl").write_text("\n".join(truth_lines) + "\n")
    desc = describe(n_images, seed, clean, {k: int(ids[j]) for k, j in broken.items()})
    desc["detail"] = detail
    desc["problems"]["families"] = {
        "rates": FAMILY_RATES, "edits": FAMILY_EDITS,
        "note": "variants of a recent post (parent_id set; the original has_children) and re-uploads (the same "
                "picture re-encoded, linked to nothing); their tags are the original's",
        "members": {str(k): v for k, v in children.items()}}
    write_json_atomic(tmp / "sample.json", desc)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return desc


# Families: a post may be a variant of one of the last FAMILY_WINDOW plain posts (as edits are
# uploaded soon after their original), or a re-upload of one.
FAMILY_WINDOW = 40
FAMILY_RATES = {"variant": 0.12, "reupload": 0.02}
FAMILY_EDITS = {"recolour": "colour and brightness changed", "crop": "cut to 88-96% and scaled back",
                "edit": "a small mark drawn in a corner", "reupload": "re-encoded at JPEG quality 80"}


def _family_member(frng: np.random.Generator, recent: list) -> tuple | None:
    """(index, post, image, edit, rng) of the original this post is a variant or re-upload
    of, or None (most posts)."""
    u = frng.random()
    if u >= FAMILY_RATES["variant"] + FAMILY_RATES["reupload"]:
        return None
    edit = "reupload" if u < FAMILY_RATES["reupload"] else ("recolour", "crop", "edit")[int(frng.integers(3))]
    i, _, post, img = recent[int(frng.integers(len(recent)))]
    return i, post, img, edit, frng


def _edit(img: Image.Image, edit: str, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    if edit == "recolour":
        out = ImageEnhance.Color(img).enhance(float(rng.uniform(0.5, 1.5)))
        return ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.9, 1.1)))
    if edit == "crop":
        f = float(rng.uniform(0.88, 0.96))
        cw, ch = int(w * f), int(h * f)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BICUBIC)
    if edit == "edit":
        out = img.copy()
        r = int(min(w, h) * rng.uniform(0.04, 0.07))
        cx, cy = (r + 2, r + 2) if rng.random() < 0.5 else (w - r - 3, h - r - 3)
        ImageDraw.Draw(out).ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        return out
    return img  # a re-upload: the same picture (encoded again)


def _variant_post(original: Post, pid: int, rng: np.random.Generator) -> Post:
    """The original's content under a new id; its metadata tags drop out on their own."""
    general = [t for t in original.truth if rng.random() >= MISSING_RATE]
    return Post(**{**original.__dict__, "id": pid, "general": sorted(general)})


def _record(i: int, pid: int, post: Post, size: tuple[int, int], md5: str, ext: str, kind: str | None,
            prng: np.random.Generator) -> dict[str, Any]:
    """Post `pid`'s metadata record as Danbooru's exports write it, messy in the ways real
    dumps are (ids as floats, sizes as text, fields missing) and broken as `kind` asks."""
    general = [] if kind == "no_tags" else post.general
    rec = {
        "id": float(pid) if i % 9 == 4 else pid,  # messy: some ids as floats
        "created_at": int(1_600_000_000_000 + pid * 1000),  # epoch milliseconds
        "md5": md5, "file_ext": ext, "rating": post.rating,
        "image_width": str(size[0]) if i % 7 == 3 else size[0], "image_height": size[1],
        "tag_string": " ".join(sorted(general + post.character + post.copyright + post.artist + post.meta)),
        "tag_string_general": " ".join(general),
        "tag_string_character": " ".join(post.character),
        "tag_string_copyright": " ".join(post.copyright),
        "tag_string_artist": " ".join(post.artist),
        "tag_string_meta": " ".join(post.meta),
        "is_deleted": False,
        "score": int(prng.integers(0, 200)),
    }
    if i % 11 == 6:  # messy: fields missing altogether
        del rec["image_height"], rec["score"]
    if kind == "no_tags":
        for c in ("tag_string", "tag_string_character", "tag_string_copyright",
                  "tag_string_artist", "tag_string_meta"):
            rec[c] = ""
    return rec


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def describe(n_images: int, seed: int, clean: bool, broken: dict[str, int]) -> dict[str, Any]:
    """What the sample holds and the strength of each data problem it reproduces."""
    return {
        "n_images": n_images, "seed": seed, "clean": clean,
        "layout": "512px/NNNN/ID.jpg, original/NNNN/ID.{png,webp,gif}; metadata/posts.json (JSON lines)",
        "problems": {
            "overlapping_tags": {"implies": OVERLAP},
            "abstract_tags": {"tags": dict(zip(ABSTRACT_TAGS, ABSTRACT_RATES)),
                              "note": "assigned at random; no visual signal"},
            "pseudo_hierarchy": {"characters": {c[0]: {"sex": c[1], "hair": c[2], "eyes": c[3],
                                                       "copyright": c[4]} for c in CHARACTERS}},
            "class_imbalance": {"glyph_rate": "0.5 * rank^-0.62", "rates": glyph_rates()},
            "missing_tags": {"rate": MISSING_RATE, "truth": "truth.jsonl"},
        },
        "rating": {"depends_on": list(EXPOSURE_TAGS),
                   "p_by_count_shown": {str(i): p for i, p in enumerate(RATING_BY_EXPOSURE)}},
        "glyphs": {t: {"shape": s, "colour": list(c)} for t, (s, c) in glyph_table().items()},
        "broken_records": {k: {"id": v, "expected_reason": BROKEN.get(k, "kept (odd mode)")}
                           for k, v in broken.items()},
    }
