"""Built-in plugin format_safetensors (under construction)."""
