"""firebreak_exp: train deep Q-learning agents to place fuel breaks on raster landscapes."""
