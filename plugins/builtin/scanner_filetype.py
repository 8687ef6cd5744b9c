"""Built-in plugin scanner_filetype (under construction)."""
