"""Dataset loaders. Every loader returns a `FaceSet`: uint8 images plus integer labels."""

from edge_fer.data.faceset import FaceSet, SPLITS
from edge_fer.data.loaders import load_dataset

__all__ = ["FaceSet", "SPLITS", "load_dataset"]
