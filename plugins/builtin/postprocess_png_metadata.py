"""Built-in plugin postprocess_png_metadata (under construction)."""
