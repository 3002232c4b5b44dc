"""The model zoo: named classifier builders and checks on user models."""

from tfimgopt.models.files import load_model
from tfimgopt.models.zoo import create_model, is_graph_model, list_models, register_model

__all__ = ["create_model", "is_graph_model", "list_models", "load_model", "register_model"]
