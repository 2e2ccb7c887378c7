"""The thesis architecture: a ResNet whose every residual block carries a Squeeze-and-
Excitation block (Hu et al., "Squeeze-and-Excitation Networks", arXiv 1709.01507).

Built from stock Keras layers only, so `model.keras` loads with `keras.saving.load_model`
and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import pandas as pd
from keras import layers

from animetag.config import ModelConfig
from animetag.registry import BACKBONES
from animetag.settings import POSITIVE, check


def se_block(x, ratio: int = 16, name: str = "se"):
    """Squeeze (global average pooling), excite (Dense-ReLU, Dense-sigmoid), rescale channels."""
    c = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Dense(max(c // ratio, 1), activation="relu", name=f"{name}_reduce")(s)
    s = layers.Dense(c, activation="sigmoid", name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True, sync: bool = False):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def residual_se_block(x, filters: int, stride: int, se_ratio: int, name: str, sync: bool = False,
                      se: bool = True):
    """A basic residual block (two 3x3 convolutions) with SE before the addition (`se`)."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_proj", relu=False, sync=sync)
    y = _conv_bn(x, filters, 3, stride, f"{name}_a", sync=sync)
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", relu=False, sync=sync)
    if se:
        y = se_block(y, se_ratio, f"{name}_se")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


@dataclass
class ResNetSettings:
    """The ResNet backbones' own settings: the stem's width, then one width and one depth
    (basic residual blocks) per stage, and the SE blocks' reduction ratio."""

    stem_width: int = 64
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 3, 3)
    se_ratio: int = 16

    def __post_init__(self) -> None:
        check(self, "", {"stem_width": POSITIVE, "widths": POSITIVE, "depths": POSITIVE, "se_ratio": POSITIVE})
        if not self.widths:
            raise ValueError("widths = (): give at least one stage, e.g. [64, 128, 256, 512]")
        if len(self.widths) != len(self.depths):
            raise ValueError(f"widths {list(self.widths)} and depths {list(self.depths)} must have the same length")


def resnet_features(inputs, cfg: ResNetSettings, sync: bool = False, se: bool = True):
    """The thesis's ResNet body on raw 0-255 pixels: rescale, stem (7x7 convolution, batch
    norm, ReLU, max pooling), then the stages of basic residual blocks, with SE or without."""
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn(x, cfg.stem_width, 7, 2, "stem", sync=sync)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for i, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
        for j in range(depth):
            stride = 2 if (i > 0 and j == 0) else 1
            x = residual_se_block(x, width, stride, cfg.se_ratio, f"stage{i + 1}_block{j + 1}", sync, se)
    return x


# -- the registered backbones: raw 0-255 RGB in, a feature map (batch, h, w, channels) out ---

@BACKBONES.register("resnet_se", settings=ResNetSettings)
def resnet_se(inputs, settings: ResNetSettings, synchronized_bn: bool = False):
    """The thesis's ResNet with a Squeeze-and-Excitation block in every residual block."""
    return resnet_features(inputs, settings, synchronized_bn, se=True)


@BACKBONES.register("resnet", settings=ResNetSettings)
def resnet(inputs, settings: ResNetSettings, synchronized_bn: bool = False):
    """The same ResNet without SE blocks (the ablation of SE)."""
    return resnet_features(inputs, settings, synchronized_bn, se=False)


@dataclass
class ApplicationSettings:
    """A keras.applications backbone's one setting: "imagenet" starts it pretrained
    (downloading the weights), "" from scratch."""

    weights: str = ""

    def __post_init__(self) -> None:
        check(self, "", choices={"weights": ("", "imagenet")})


def _application(builder: str, inputs, settings: ApplicationSettings):
    """A keras.applications backbone, its layers inlined on `inputs` (so the saved model holds
    stock layers only); it normalises 0-255 pixels itself."""
    return getattr(keras.applications, builder)(include_top=False, weights=settings.weights or None,
                                                input_tensor=inputs).output


@BACKBONES.register("convnext_tiny", settings=ApplicationSettings)
def convnext_tiny(inputs, settings: ApplicationSettings, synchronized_bn: bool = False):
    """ConvNeXt-Tiny from keras.applications (28M parameters; weights="imagenet" to start pretrained)."""
    return _application("ConvNeXtTiny", inputs, settings)


@BACKBONES.register("efficientnetv2_b0", settings=ApplicationSettings)
def efficientnetv2_b0(inputs, settings: ApplicationSettings, synchronized_bn: bool = False):
    """EfficientNetV2-B0 from keras.applications (6M parameters; weights="imagenet" to start pretrained)."""
    return _application("EfficientNetV2B0", inputs, settings)


@keras.saving.register_keras_serializable(package="animetag")
class StopGradient(layers.Layer):
    """Passes its input on, and no gradient back: the rating head learns from the features
    without shaping them. Training only: the portable model.keras holds an Identity here."""

    def call(self, x):
        return keras.ops.stop_gradient(x)


# The layers that compute scores: kept in float32 under mixed precision.
HEADS = ("rating", "tags", "scores")
EMBEDDING = "pool"  # the pooled features, the export's second output


def build_model(n_tags: int, image_size: int = 256, cfg: ModelConfig | None = None,
                name: str = "resnet_se", synchronized_bn: bool = False, n_ratings: int = 0,
                rating_probe: bool = False) -> keras.Model:
    """The tagger: raw 0-255 RGB in, the backbone `cfg.backbone` (the thesis ResNet-SE unless
    another is named; see `registry.BACKBONES`), global average pooling, dropout, and the
    scores out, computed in float32, one per row of tags.csv.

    With `n_ratings` (4), the scores are the rating head's softmax (one rating per image)
    followed by the `n_tags` sigmoid tag scores, the WD taggers' output order; without, the
    tag scores alone (the thesis model). `rating_probe`: the rating head's gradient stops at
    the pooled features (a linear probe), so the tags are learnt exactly as without it.

    `synchronized_bn`: batch statistics over the global batch of all replicas. Needed with
    several replicas: otherwise each replica keeps its own moving statistics, validation runs
    each replica with its own, and the saved model holds only the first replica's."""
    cfg = cfg or ModelConfig()
    settings = BACKBONES.settings(cfg.backbone, cfg.settings, "model.")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = BACKBONES.get(cfg.backbone)(inputs, settings, synchronized_bn)
    x = layers.GlobalAveragePooling2D(name=EMBEDDING)(x)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = layers.Dense(n_tags, activation="sigmoid", dtype="float32", name="tags")(x)
    if n_ratings:
        r = StopGradient(name="rating_probe")(x) if rating_probe else x
        rating = layers.Dense(n_ratings, activation="softmax", dtype="float32", name="rating")(r)
        outputs = layers.Concatenate(dtype="float32", name="scores")([rating, outputs])
    return keras.Model(inputs, outputs, name=name)


def flops_per_image(model: keras.Model) -> int:
    """Multiply-adds x 2 of the convolutions (depthwise ones too) and dense layers for one
    forward pass. A Dense layer on a feature map (ConvNeXt's pointwise layers) counts once per
    position."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a nested model (none in ours; keras.applications inline)
            total += flops_per_image(layer)
            continue
        weights = [w for w in layer.weights if w.path.endswith(("kernel", "depthwise_kernel"))]
        if not weights:
            continue
        k = weights[0].shape
        positions = int(math.prod(d for d in layer.output.shape[1:-1]))  # 1 for a vector
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):  # (h, w, in, out or multiplier)
            total += 2 * k[0] * k[1] * k[2] * k[3] * positions
        elif isinstance(layer, layers.Dense):
            total += 2 * k[0] * k[1] * positions
    return int(total)


def float32_copy(model: keras.Model) -> keras.Model:
    """The same architecture and weights with every layer in float32 and no cross-replica batch
    norm: the portable inference model, whatever precision and strategy it was trained with
    (mixed float16/bfloat16 keep float32 weights, so nothing is lost; ONNX and other runtimes
    get one dtype throughout)."""
    return with_dtype_policy(model, "float32")


def with_dtype_policy(model: keras.Model, policy: str) -> keras.Model:
    """A copy of a functional model with every layer under `policy` (the score layers stay
    float32), its batch norm local to one device, and stock Keras layers only."""

    def clone(layer):
        if isinstance(layer, StopGradient):  # inference needs no gradient: a stock layer instead
            return layers.Identity(name=layer.name)
        config = layer.get_config()
        if isinstance(layer, layers.Layer):  # not the bare operations some applications use (ops.add)
            config["dtype"] = "float32" if layer.name in HEADS else policy  # the scores stay float32
        if "synchronized" in config:  # a training-time setting (several replicas)
            config["synchronized"] = False
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def stage_table(model: keras.Model):
    """One row per stage of the ResNet-SE (stem, each stage, the heads): its blocks, output
    shape and parameters; a compact stand-in for `model.summary()`'s hundred-odd rows."""

    heads = "heads (pool, dropout, rating, tags)"
    rows: dict[str, dict] = {}
    for layer in model.layers:
        name = layer.name
        stage = ("stem" if name.startswith("stem") or name == "rescale" else
                 name.split("_")[0] if name.startswith("stage") else
                 "input" if name == "image" else heads)
        r = rows.setdefault(stage, {"blocks": set(), "output": None, "params": 0})
        if name.startswith("stage"):
            r["blocks"].add(name.split("_")[1])
        r["params"] += int(layer.count_params())
        r["output"] = tuple(layer.output.shape[1:])  # the stage's last layer
    rows.pop("input", None)
    df = pd.DataFrame({k: {"blocks": len(v["blocks"]) or "", "output": "x".join(map(str, v["output"])),
                           "params": v["params"]} for k, v in rows.items()}).T
    df.loc["total"] = ["", "", int(model.count_params())]
    df["params"] = df["params"].map(lambda v: f"{int(v):,}")
    return df
