"""modelsafe.registry: walk, read, identify, hash, audit, convert and catalog model files."""
