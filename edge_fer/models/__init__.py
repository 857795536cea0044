"""Model zoo (needs the `train` extra: torch). `create_model(name, ...)` builds by name."""

from edge_fer.models.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]
