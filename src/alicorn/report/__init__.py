"""Reports of a scan: text, JSON, SARIF, CycloneDX VEX — one module per format."""
