"""Images: deterministic layers, OCI configs, manifests and layouts.

The label names live here, not in :mod:`alicorn.image.oci`, so that readers of images (the
inventory) can name them without importing the recipe machinery the writer needs.
"""

LABEL_RECIPE_DIGEST = "org.alicorn.recipe.digest"
LABEL_CONTENT_PATH = "org.alicorn.content-path"
LABEL_HEALTHCHECK = "org.alicorn.healthcheck"
LABEL_TESTS = "org.alicorn.tests"
