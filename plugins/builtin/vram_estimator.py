"""Built-in plugin vram_estimator (under construction)."""
