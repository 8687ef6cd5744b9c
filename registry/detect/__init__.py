"""Helpers shared by the family detectors: key prefixes, shape evidence, denoiser probes."""
