"""Tensor layouts of real model families, derived by the project, for tests and benchmarks."""
