"""Model compression (extra `compress`): structured / 2:4 / unstructured pruning with fine-tuning
(`edge-fer prune`), quantization-aware training exported as QDQ ONNX (`edge-fer qat`), and the
compression report that compares the resulting ONNX models on one table.

Importing this package registers the `pruned` architecture (`edge_fer.compress.arch`), so that
checkpoints and ONNX files of structurally pruned models can be rebuilt; the heavy parts
(torch-pruning, the fine-tuning loop) are imported only by the modules that need them.
"""

from edge_fer.compress import arch as _arch  # noqa: F401  (registers "pruned")
