"""The chain of identity: keys, signed provenance, SBOMs, the transparency log, tracing and
verifying an image back to its inputs."""
