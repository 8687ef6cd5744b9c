"""Built-in plugin scanner_safetensors (under construction)."""
