"""animetag: train and study multi-label Danbooru taggers (ResNet-SE, focal loss)."""

__version__ = "0.1.0"
