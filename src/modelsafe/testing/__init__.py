"""Helpers for modelsafe's tests and for plugin authors' tests.

- :func:`fresh_plugin_manager`: a plugin manager built from the installed entry points (optionally
  with extra plugin objects registered), installed as the process-wide one while in use.
- :func:`write_safetensors`: a real safetensors file from (name, dtype, shape) specs, with zero,
  random or sparse (no disk used) data, so layouts can be tested at full size.
- :func:`invoke`: run ``modelsafe ARGS`` in-process and get (exit code, stdout, stderr);
  :class:`modelsafe.testing.queues.RecordingQueue`: a job queue that records and runs nothing.
- :func:`modelsafe.testing.tiny_models.tiny_model`: a tiny real diffusers pipeline of a family
  (random weights) as a folder, a single file, configs and tokenizers, for generation tests
  (imported on its own because it needs torch and diffusers).
"""

from __future__ import annotations

from modelsafe.testing.cli import invoke
from modelsafe.testing.plugins import fresh_plugin_manager
from modelsafe.testing.safetensors_writer import TensorSpec, write_safetensors

__all__ = ["TensorSpec", "fresh_plugin_manager", "invoke", "write_safetensors"]
