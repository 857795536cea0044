"""The video runtime behind `edge-fer run` and `edge-fer bench` (see docs/runtime.md).

sources (URIs -> frames), tracker (IoU, stable ids), crops, smoothing (EMA per track), sinks
(video, JSON Lines events, summary, window, MJPEG preview), pipeline (threads and bounded
queues), runner (assembles a run from options), demo, bench.
"""
