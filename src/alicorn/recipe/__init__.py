"""Image recipes: the declarative, versioned description of an image."""

from alicorn.recipe.loader import load_recipe, parse_recipe
from alicorn.recipe.model import (
    Artifact,
    BaseRef,
    FileSpec,
    Healthcheck,
    HttpCheck,
    Recipe,
    Repository,
    TestSpec,
)

__all__ = [
    "Artifact", "BaseRef", "FileSpec", "Healthcheck", "HttpCheck", "Recipe", "Repository",
    "TestSpec",
    "load_recipe", "parse_recipe",
]
