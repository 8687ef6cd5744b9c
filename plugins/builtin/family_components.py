"""Built-in plugin family_components (under construction)."""
