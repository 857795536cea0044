# Minimal local type stubs for pycuda (no stubs exist on PyPI): only what edge-fer calls.
# Checked against pycuda 2026.1's src/wrapper/wrap_cudadrv.cpp; extend when using more.
VERSION: tuple[int, ...]
VERSION_TEXT: str
