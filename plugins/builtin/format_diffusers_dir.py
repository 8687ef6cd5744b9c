"""Built-in plugin format_diffusers_dir (under construction)."""
