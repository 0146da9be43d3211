"""Models: the zoo, safe loading of files and user code, and variant serialization."""

from workbench.core.models.loading import build_from_recipe, load_model, load_weights
from workbench.core.models.onnx_model import OnnxModel, is_onnx
from workbench.core.models.recipe import recipe_of, set_recipe
from workbench.core.models.zoo import ZooEntry, build_zoo_model, list_models

__all__ = [
    "OnnxModel", "ZooEntry", "build_from_recipe", "build_zoo_model", "is_onnx", "list_models", "load_model",
    "load_weights", "recipe_of", "set_recipe",
]
