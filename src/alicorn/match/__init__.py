"""Matching installed packages against advisories, with each ecosystem's version order.

``versions`` compares versions (rpm's labelCompare, dpkg, PEP 440, Maven, RubyGems, semver);
``matcher`` decides which advisories apply to which installed packages: distro packages only
against distro advisories (backported fixes are not false positives), upstream ranges only for
packages no distribution owns.
"""
