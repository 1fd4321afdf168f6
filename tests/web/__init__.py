"""The web service's tests: a package, so that tests/web/conftest.py does not hide
tests/conftest.py (``from conftest import ...`` finds the root one)."""
