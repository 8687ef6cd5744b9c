"""modelsafe.runtime: resolve compatible sets, plan VRAM, generate through backends."""
