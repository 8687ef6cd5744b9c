"""Format readers: turn a file's headers into a TensorIndex without reading tensor data."""
