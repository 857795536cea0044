"""edge-fer: facial expression recognition for edge devices."""

__version__ = "0.1.0"
