"""Dataset loaders. Every loader returns a `FaceSet`: uint8 images plus integer labels."""

from edge_fer.data.faceset import SPLITS, FaceSet
from edge_fer.data.loaders import load_dataset

__all__ = ["SPLITS", "FaceSet", "load_dataset"]
