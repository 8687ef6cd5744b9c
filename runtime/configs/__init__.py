"""Small config files the runtime ships so generation works offline."""
