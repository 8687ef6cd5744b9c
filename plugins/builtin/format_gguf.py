"""Built-in plugin format_gguf (under construction)."""
