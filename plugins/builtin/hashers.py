"""Built-in plugin hashers (under construction)."""
