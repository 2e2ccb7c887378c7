"""The registered backbones and losses. Each is one function under a name; Keras is imported
inside them, so the names (for validation and the CLI) cost nothing to list.

Adding one is one function and its test::

    from animetag.plugins import BACKBONES

    @BACKBONES.register("my_net")
    def my_net(inputs, cfg, synchronized_bn):
        \"\"\"What it is, in one line (shown by `animetag train --help`).\"\"\"
        ...  # raw 0-255 pixels in, a feature map (batch, h, w, channels) out

A backbone takes the raw 0-255 RGB input tensor, the ModelConfig and whether batch norm is
synchronised across replicas, and returns a feature map; pooling, dropout and the heads are
the same for all. A loss takes the TrainConfig and returns a Keras loss whose `call` gives
one value per image (mean over tags).
"""

from __future__ import annotations

from .registry import BACKBONES, LOSSES

__all__ = ["BACKBONES", "LOSSES"]


# -- backbones ---------------------------------------------------------------------------

@BACKBONES.register("resnet_se")
def resnet_se(inputs, cfg, synchronized_bn=False):
    """The thesis's ResNet with a Squeeze-and-Excitation block in every residual block."""
    from .model import resnet_features

    return resnet_features(inputs, cfg, synchronized_bn, se=True)


@BACKBONES.register("resnet")
def resnet(inputs, cfg, synchronized_bn=False):
    """The same ResNet without SE blocks (the ablation of SE)."""
    from .model import resnet_features

    return resnet_features(inputs, cfg, synchronized_bn, se=False)


def _application(builder: str, inputs, cfg):
    """A keras.applications backbone, its layers inlined on `inputs` (so the saved model holds
    stock layers only); it normalises 0-255 pixels itself."""
    import keras

    weights = cfg.weights or None
    return getattr(keras.applications, builder)(include_top=False, weights=weights, input_tensor=inputs).output


@BACKBONES.register("convnext_tiny")
def convnext_tiny(inputs, cfg, synchronized_bn=False):
    """ConvNeXt-Tiny from keras.applications (28M parameters; weights="imagenet" to start pretrained)."""
    return _application("ConvNeXtTiny", inputs, cfg)


@BACKBONES.register("efficientnetv2_b0")
def efficientnetv2_b0(inputs, cfg, synchronized_bn=False):
    """EfficientNetV2-B0 from keras.applications (6M parameters; weights="imagenet" to start pretrained)."""
    return _application("EfficientNetV2B0", inputs, cfg)


# -- losses ------------------------------------------------------------------------------

@LOSSES.register("focal")
def focal(cfg):
    """Focal loss with alpha balancing, the thesis's: FL = -alpha_t (1 - p_t)^gamma log(p_t)."""
    import keras

    return keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=cfg.focal_alpha,
                                                gamma=cfg.focal_gamma, name="focal_loss")


@LOSSES.register("bce")
def bce(cfg):
    """Binary cross-entropy, averaged over tags (ahead of focal loss in SmilingWolf's sweep)."""
    import keras

    return keras.losses.BinaryCrossentropy(name="bce")


@LOSSES.register("asl")
def asl(cfg):
    """Asymmetric loss (Ridnik et al.): easy negatives discarded, for under-tagged data."""
    from .losses import AsymmetricLoss

    return AsymmetricLoss(cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip)
