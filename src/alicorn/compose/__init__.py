"""Composers: turn a recipe's repositories and packages into a root filesystem."""

from alicorn.compose.interface import BuildContext, Composer, Package, RepoState, composer_for

__all__ = ["BuildContext", "Composer", "Package", "RepoState", "composer_for"]
