"""Inventory: what is installed in a target (the host, a root filesystem, an image).

``model`` holds the values; ``interface`` the extension point (one :class:`PackageSource` per
package database: rpmdb, dpkg, Python dist-info, gems, jars, npm); ``collect`` runs every source
over one root; ``targets`` turns what the user named (``host``, a directory, an OCI layout or
archive, a podman image or container, an Alicorn build digest) into a root to collect from.
"""
