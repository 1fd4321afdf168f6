"""Alicorn: container images composed from distribution packages, with a chain of identity."""

__version__ = "0.1.0"
