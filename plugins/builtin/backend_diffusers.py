"""Built-in plugin backend_diffusers (under construction)."""
