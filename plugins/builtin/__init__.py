"""Built-in plugins. Each module here is registered through the ``modelsafe`` entry-point group,
exactly like a third-party plugin (see ``[project.entry-points.modelsafe]`` in pyproject.toml)."""
