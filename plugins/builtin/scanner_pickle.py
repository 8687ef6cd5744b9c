"""Built-in plugin scanner_pickle (under construction)."""
