"""Built-in plugin compatibility_rules (under construction)."""
