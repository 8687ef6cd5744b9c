"""modelsafe.plugins: the hook specifications and every built-in plugin."""
