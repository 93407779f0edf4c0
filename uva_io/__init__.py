"""Formats and I/O shared by the preprocessing jobs and the training pipeline: typed YAML config,
packaged configs and artifacts, atomic writes, the latent shard set format, media I/O, the VAE
bundle and the one frames -> latents step. Imports uva/ and third-party libraries only."""
