"""Image upscaling networks (ESRGAN family) written for modelsafe, run by the built-in
``postprocess_upscale`` plugin: ``esrgan`` (RRDBNet), ``compact`` (SRVGGNetCompact), ``select``
(find, check, load and run one)."""
