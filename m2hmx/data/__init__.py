"""Frames, synthetic scenes, dataset readers and torch datasets (no Qt).

Importing this package is cheap: readers, the renderer (Open3D) and the torch datasets live in their
own modules (``m2hmx.data.sources``, ``m2hmx.data.synthetic``, ``m2hmx.data.torch_datasets``).
"""
from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame

__all__ = ["DatasetError", "Frame"]
