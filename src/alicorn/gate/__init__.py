"""The security gate an image passes before it is published.

model.py     GateContext (what a check may look at), CheckResult, GateResult
spec.py      parse_gate: the recipe's ``gate:`` (all-of / any-of / checks) → a tree of checks
checks.py    Alicorn's own checks: no-new-findings, no-setuid, no-world-writable, no-secrets,
             non-root, healthcheck
layers.py    the image's files as a container sees them, from the layers' tar headers
openscap.py  OpenSCAP with the SCAP Security Guide's profile for the image's distribution
run.py       run_gate: evaluate the tree, write the results (JSON, ARF, HTML) into a directory
"""
