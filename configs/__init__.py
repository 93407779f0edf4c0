"""Package data: the YAML configs (installed as ``uva_configs``; found through uva_io.assets)."""
