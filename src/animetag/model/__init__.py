"""Stage 2, model: the architecture and its registered backbones, losses, threshold
policies, the optimizer, augmentation and the Keras metrics. Imports the foundation and
`data` only."""

# Plug-ins written before the package was grouped by stage import the backbone helpers from
# `animetag.model`, where they lived; they are still found there.
_MOVED = {"ResNetSettings", "resnet_features"}


def __getattr__(name: str):
    if name in _MOVED:
        from animetag.model import architecture

        return getattr(architecture, name)
    raise AttributeError(f"module 'animetag.model' has no attribute {name!r}")
