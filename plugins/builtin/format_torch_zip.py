"""Built-in plugin format_torch_zip (under construction)."""
