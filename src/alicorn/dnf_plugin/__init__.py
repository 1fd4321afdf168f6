"""The DNF plugins: ``dnf list-security`` and ``dnf update-module``, and their installation
into the system's dnf.

:mod:`alicorn.dnf_plugin.list_security` and :mod:`alicorn.dnf_plugin.update_module` (which
applies a module's update through :mod:`alicorn.rollout`) are the commands; they run inside the
system's dnf, under the system Python, so they import only the standard library, dnf (hawkey,
rpm) and ``alicorn``.  :mod:`alicorn.dnf_plugin.install` writes the shims that make dnf load
them (``alicorn setup-host`` calls it).  This package itself imports nothing, so importing
the installer does not need dnf.
"""
