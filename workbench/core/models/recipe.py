"""The architecture recipe a PyTorch model carries: how to rebuild it (a zoo entry, a layer list, a Keras
conversion, a language model's config). Kept on the module itself, so jobs that change a model in place keep it.
"""

from __future__ import annotations

from typing import Any

RECIPE_ATTR = "workbench_recipe"


def recipe_of(model: Any) -> dict[str, Any] | None:
    return getattr(model, RECIPE_ATTR, None)


def set_recipe(model: Any, recipe: dict[str, Any]) -> Any:
    """Remember how to rebuild ``model`` (kept on the module so jobs that modify it in place keep it)."""
    try:
        object.__setattr__(model, RECIPE_ATTR, recipe)
    except (AttributeError, TypeError):
        pass
    return model
