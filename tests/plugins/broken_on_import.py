"""An example plugin that fails to import (tests that modelsafe reports and skips it)."""

raise ImportError("this plugin needs a library that is not installed")
