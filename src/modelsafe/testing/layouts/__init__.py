"""Tensor layouts of real model families, derived by the project (see each module), for tests and benchmarks."""
