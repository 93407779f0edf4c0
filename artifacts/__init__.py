"""Package data: the default VAE bundle (installed as ``uva_artifacts``; found through uva_io.assets)."""
