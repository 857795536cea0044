"""The export chain: checkpoint -> ONNX (`onnx`), ONNX -> torch (`onnx_import`), INT8 export
(`int8`), ONNX -> TensorRT engine (`engine`, `config`, `sidecar`), and the deployment targets
(`targets`). Submodules are imported on use: this package imports nothing heavy."""
