"""Acceptance tests of an image, run the way it is used: in podman, over HTTP."""
