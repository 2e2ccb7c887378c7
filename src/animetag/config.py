"""Run settings: small dataclasses with defaults, profiles, and a JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from animetag.registry import BACKBONES
from animetag.settings import FRACTION, NON_NEGATIVE, POSITIVE, check

# Danbooru tag category ids (the API's `category` field and the older dumps' tag objects).
CATEGORY_IDS = {"general": 0, "artist": 1, "copyright": 3, "character": 4, "meta": 5}
CATEGORY_NAMES = {v: k for k, v in CATEGORY_IDS.items()}
CATEGORIES = ("general", "character", "copyright", "artist", "meta")
RATINGS = ("g", "s", "q", "e")
# The WD taggers' rating rows: category 9, first in selected_tags.csv, in this order.
RATING_CATEGORY = 9
RATING_NAMES = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}
RATING_SCHEMES = ("auto", "current", "legacy")


@dataclass
class SubsetConfig:
    """How a training subset is chosen and built (`animetag subset`)."""

    top_k: int = 100  # 0: only the `tags` named
    tags: tuple[str, ...] = ()  # tags kept by name, any category, beside the top-k (`--tags FILE`)
    top_k_character: int = 0  # characters kept beside the top-k tags (0: none, the thesis setting)
    rating_outputs: bool = True  # the four rating rows first, as the WD taggers have them
    rating_scheme: str = "auto"  # auto | current (g/s/q/e) | legacy (before 2022: s meant safe)
    max_images: int = 25000
    image_size: int = 256
    categories: tuple[str, ...] = ("general",)
    min_tags: int = 1
    ratings: tuple[str, ...] = ()  # empty: every rating
    exclude_tags: tuple[str, ...] = ()
    tag_table: str = ""  # name,category CSV that categorises flat tag strings (e.g. selected_tags.csv)
    include_deleted: bool = False
    seed: int = 0
    splits_from: str = ""  # a subset folder: posts it holds keep their split here (fine-tuning a run trained on it)
    split_by: str = "family"  # family: parent/child chains, identical files and near-duplicates share a split; random
    near_duplicate_bits: int = 24  # pHash (256 bits) distance that makes two images one family; negative: off
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_pixels: int = 64_000_000  # larger images are refused, never decoded
    images_per_shard: int = 2048
    jpeg_quality: int = 95
    workers: int = 0  # 0: one per CPU core

    def __post_init__(self) -> None:
        check(self, "", {"top_k": NON_NEGATIVE, "top_k_character": NON_NEGATIVE, "max_images": POSITIVE,
                          "image_size": (8, None, True, None), "min_tags": NON_NEGATIVE,
                          "val_fraction": (0, 1, True, False), "test_fraction": (0, 1, True, False),
                          "max_pixels": POSITIVE, "images_per_shard": POSITIVE,
                          "jpeg_quality": (1, 100, True, True), "workers": NON_NEGATIVE})
        if self.split_by not in ("family", "random"):
            raise ValueError(f"split_by: {self.split_by!r} is not one of family, random")
        bad = [c for c in self.categories if c not in CATEGORIES]
        if bad:
            raise ValueError(f"categories: unknown {bad}; choose from {list(CATEGORIES)}")
        bad = [r for r in self.ratings if r not in RATINGS]
        if bad:
            raise ValueError(f"ratings: unknown {bad}; choose from {list(RATINGS)}")
        self.tags = tuple(dict.fromkeys(tag_name(t) for t in self.tags if tag_name(t)))
        if self.top_k < 1 and not self.tags and not self.top_k_character:
            raise ValueError("top_k = 0 and no tags named: nothing to keep; give top_k, or the tags (--tags FILE)")
        if self.top_k_character < 0:
            raise ValueError(f"top_k_character: {self.top_k_character} must be 0 or more")
        if self.rating_scheme not in RATING_SCHEMES:
            raise ValueError(f"rating_scheme: {self.rating_scheme!r} is not one of {list(RATING_SCHEMES)}")
        if not 0 < self.val_fraction + self.test_fraction < 1:
            raise ValueError("val_fraction + test_fraction must lie between 0 and 1")


@dataclass
class ModelConfig:
    """The backbone (a name in `registry.BACKBONES`), its own settings, and the head's dropout.

    `settings` belong to the backbone: its registration declares them (the ResNets' stem,
    widths, depths and SE ratio; a keras.applications backbone's `weights`) and checks them
    when the model is built. In config.json and on the command line they sit beside
    `backbone` (`--set model.widths=[32,64]`), as big_vision passes `**config.model`."""

    backbone: str = "resnet_se"
    dropout: float = 0.3
    settings: dict = field(default_factory=dict)

    CORE = ("backbone", "dropout", "settings")

    def __post_init__(self) -> None:
        check(self, "model.", {"dropout": (0, 1, True, False)})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """From config.json's flat `model` group: what is not backbone or dropout is the
        backbone's."""
        d = dict(d)
        settings = {**d.pop("settings", {}), **{k: d.pop(k) for k in list(d) if k not in cls.CORE}}
        return cls(**d, settings=settings)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps({"backbone": self.backbone, "dropout": self.dropout, **self.settings}))


@dataclass
class AugmentConfig:
    """Training-only augmentation; evaluation never augments."""

    flip: bool = True
    crop: float = 0.1  # largest translation, as a fraction of the side
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1

    def __post_init__(self) -> None:
        check(self, "augment.", {"crop": (0, 0.5, True, True), "brightness": FRACTION, "contrast": FRACTION,
                                  "saturation": FRACTION})


@dataclass
class TrainConfig:
    """Everything needed to rebuild and repeat a training run; saved as config.json."""

    profile: str = "full"
    image_size: int = 256
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    loss: str = "focal"  # a name in registry.LOSSES (focal | bce | asl | ...)
    loss_settings: dict = field(default_factory=dict)  # the loss's own (focal: alpha, gamma); see its registration
    rating_loss_weight: float = 0.05  # the rating head's cross-entropy beside the tag loss (see losses)
    rating_joint: bool = False  # True: the rating also shapes the shared features (the WD taggers' way);
    # False: the rating head is a linear probe on them, and the tags train as in the thesis
    precision: str = "auto"  # auto | float32 | mixed_float16 | mixed_bfloat16
    xla: str = "auto"  # auto | on | off
    cache: str = "auto"  # auto | memory | off
    shuffle_buffer: int = 2048
    # JAX: the shard files are dealt into this many shares, each global batch taking equal parts
    # of each; process p reads shares p, p + processes, ... (0: one share per process)
    input_shares: int = 0
    seed: int = 0
    init_from: str = ""  # a trained run whose weights this one starts from (fine-tuning; `--init-from`)
    freeze_backbone_epochs: int = 0  # with init_from: the backbone stays as the parent left it this many epochs
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            unknown = set(self.augment) - {f.name for f in dataclasses.fields(AugmentConfig)}
            if unknown:
                raise ValueError(f"augment: unknown settings {sorted(unknown)}; known: "
                                 f"{[f.name for f in dataclasses.fields(AugmentConfig)]}")
            self.augment = AugmentConfig(**self.augment)
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        for name, cls in (("model", ModelConfig), ("augment", AugmentConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} = {getattr(self, name)!r}: a group of settings; set one of them, e.g. "
                                 f"--set {name}.{dataclasses.fields(cls)[1].name}=...")
        check(self, "", {"image_size": (8, None, True, None), "epochs": POSITIVE, "batch_size": POSITIVE,
                         "lr": (0, None, False, None), "weight_decay": NON_NEGATIVE, "warmup_epochs": NON_NEGATIVE,
                         "rating_loss_weight": NON_NEGATIVE, "shuffle_buffer": POSITIVE,
                         "freeze_backbone_epochs": NON_NEGATIVE, "input_shares": NON_NEGATIVE},
              {"cache": ("auto", "memory", "off"), "xla": ("auto", "on", "off"),
               "precision": ("auto", "float32", "mixed_float16", "mixed_bfloat16")})

        if self.freeze_backbone_epochs and not self.init_from:
            raise ValueError(f"freeze_backbone_epochs = {self.freeze_backbone_epochs}: only with init_from "
                             "(a backbone trained elsewhere to keep); a new backbone has nothing to keep")
        if self.freeze_backbone_epochs > self.epochs:
            raise ValueError(f"freeze_backbone_epochs = {self.freeze_backbone_epochs} is more than epochs = "
                             f"{self.epochs}: the frozen phase would outlast the run. Freeze at most {self.epochs} "
                             "epochs (all of them: the head alone is trained), or train more epochs")

    def to_dict(self) -> dict[str, Any]:
        return {**to_dict(self), "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = _older_loss_settings(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config: unknown settings {sorted(unknown)}")
        return cls(**d)


# config.json before the losses owned their settings: the flat names, read as the loss's own
_OLDER_LOSS_SETTINGS = {"focal": {"focal_alpha": "alpha", "focal_gamma": "gamma"},
                        "asl": {"asl_gamma_neg": "gamma_neg", "asl_gamma_pos": "gamma_pos", "asl_clip": "clip"}}


def _older_loss_settings(d: dict[str, Any]) -> dict[str, Any]:
    older = {k for names in _OLDER_LOSS_SETTINGS.values() for k in names}
    if not older & set(d):
        return d
    d = dict(d)
    mine = _OLDER_LOSS_SETTINGS.get(d.get("loss", "focal"), {})
    given = {mine[k]: d[k] for k in older & set(d) if k in mine}
    for k in older:
        d.pop(k, None)
    d["loss_settings"] = {**given, **d.get("loss_settings", {})}
    return d


# The thesis setting on a GPU; a slim one that finishes on two CPU cores in minutes (the
# demo); and the smallest that still trains, for the tests and CI (seconds).
PROFILES: dict[str, dict[str, Any]] = {
    "full": {},
    "sample": {
        "profile": "sample",
        "image_size": 64,
        "epochs": 20,
        "batch_size": 32,
        "lr": 3e-3,
        "warmup_epochs": 1.0,
        "shuffle_buffer": 1024,
        "model": {"stem_width": 24, "widths": (24, 48, 96, 192), "depths": (1, 1, 1, 1),
                  "se_ratio": 8, "dropout": 0.1},
    },
}
PROFILES["tiny"] = {**PROFILES["sample"], "profile": "tiny", "image_size": 32, "epochs": 3, "batch_size": 16,
                    "shuffle_buffer": 256,
                    "model": {"stem_width": 8, "widths": (8, 16), "depths": (1, 1), "se_ratio": 4, "dropout": 0.1}}
SUBSET_PROFILES: dict[str, dict[str, Any]] = {
    "full": {},
    # the sample also keeps its 10 most common characters, to show the WD layout end to end
    "sample": {"top_k": 100, "top_k_character": 10, "max_images": 25000, "image_size": 64,
               "images_per_shard": 256},
    "tiny": {"top_k": 40, "top_k_character": 10, "max_images": 25000, "image_size": 32, "images_per_shard": 128},
}
# the profiles that run on the built-in sample, and how many posts it is generated with
SAMPLE_PROFILES = {"sample": 3000, "tiny": 400}


def tag_name(text: str) -> str:
    """A tag as Danbooru writes it: lowercase, underscores for spaces ("Long Hair" -> long_hair)."""
    return "_".join(str(text).strip().lower().split())


def read_tag_names(path: str | os.PathLike) -> tuple[str, ...]:
    """Tag names from a file: one per line, or separated by commas; `#` starts a comment."""
    names = []
    for line in Path(path).read_text(encoding="utf-8-sig").splitlines():  # -sig: a BOM (Windows editors) dropped
        line = line.split("#", 1)[0]
        names += [tag_name(t) for t in line.split(",") if t.strip()]
    if not names:
        raise ValueError(f"{path}: no tag names in it (one per line, or separated by commas)")
    return tuple(dict.fromkeys(names))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` applied; nested settings merge key by key (None values are ignored)."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            continue
        if dataclasses.is_dataclass(v):
            v = dataclasses.asdict(v)
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`--set` pairs (`model.dropout=0.2`, `augment.flip=false`, `model.widths=[32,64]`) as
    nested settings; a value is read as JSON where it parses, else as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. model.dropout=0.2")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.strip().split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def train_config(profile: str = "full", **overrides: Any) -> TrainConfig:
    """The profile's settings with `overrides` merged in, nested ones key by key:
    `train_config("sample", model={"dropout": 0.2})` is the sample model with another dropout."""
    if profile not in PROFILES:
        raise ValueError(f"profile: {profile!r} is not one of {sorted(PROFILES)}")
    base = {**PROFILES[profile], "profile": profile}
    model = dict(base.get("model", {}))
    chosen = (overrides.get("model") or {}).get("backbone") if isinstance(overrides.get("model"), dict) else None
    if chosen and chosen != model.get("backbone", ModelConfig.backbone):
        # the profile's backbone settings belong to its backbone: kept for one that has the
        # same settings (resnet beside resnet_se), dropped for another
        if BACKBONES.entry(chosen).settings is not BACKBONES.entry(model.get("backbone", ModelConfig.backbone)).settings:
            base["model"] = {k: v for k, v in model.items() if k in ModelConfig.CORE}
    return TrainConfig.from_dict(deep_merge(base, overrides))


def subset_config(profile: str = "full", **overrides: Any) -> SubsetConfig:
    if profile not in SUBSET_PROFILES:
        raise ValueError(f"profile: {profile!r} is not one of {sorted(SUBSET_PROFILES)}")
    d = dict(SUBSET_PROFILES[profile])
    d.update({k: v for k, v in overrides.items() if v is not None})
    return SubsetConfig(**d)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON types (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two settings dictionaries."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root (the folder holding pyproject.toml), else the working directory."""
    p = Path(start or Path.cwd()).resolve()
    for q in (p, *p.parents):
        if (q / "pyproject.toml").exists() and (q / "src" / "animetag").exists():
            return q
    return p


COLAB_WORKSPACE = Path("/content/drive/MyDrive/animetag")


def data_home(workspace: str | os.PathLike = "") -> Path:
    """Where datasets and runs live: `workspace` where given (a notebook's WORKSPACE field);
    else, on Colab with Google Drive mounted, `MyDrive/animetag` (so each notebook finds the
    previous one's outputs and a run survives a disconnect); else `<repo>/data`."""
    if str(workspace).strip():
        return Path(workspace)
    if "google.colab" in sys.modules and COLAB_WORKSPACE.parent.is_dir():
        return COLAB_WORKSPACE
    return repo_root() / "data"
