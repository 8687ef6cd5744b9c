"""Built-in plugin family_dit (under construction)."""
