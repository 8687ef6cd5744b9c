"""Built-in plugin format_legacy_torch (under construction)."""
