"""Deployment kits generated from an exported model: `edge-fer deploy deepstream|triton`.

- `common`: what a generator needs to know about the model (preprocessing, classes, I/O tensor
  names and shapes) and the all-or-nothing output folder.
- `deepstream`: an nvinfer secondary-classifier config behind a face-detector primary, a
  deepstream-app config, the label file and a pyds probe app.
- `triton`: a Triton model repository (ONNX Runtime and TensorRT plan) and an HTTP client.
- `tegrastats`: parse `tegrastats` lines into loads, power and temperatures (jetson/ scripts).

Nothing here needs DeepStream, Triton or TensorRT: the files are written for the device.
"""
