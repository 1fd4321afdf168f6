"""The DNF plugin: ``dnf list-security``, and its installation into the system's dnf.

:mod:`alicorn.dnf_plugin.list_security` is the command; it runs inside the system's dnf, under
the system Python, so it imports only the standard library, dnf (hawkey, rpm) and ``alicorn``.
:mod:`alicorn.dnf_plugin.install` writes the shim that makes dnf load it (``alicorn
setup-host`` calls it).  This package itself imports nothing, so importing the installer does
not need dnf.
"""
