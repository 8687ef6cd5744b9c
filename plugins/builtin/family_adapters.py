"""Built-in plugin family_adapters (under construction)."""
