"""Learning pico cascades (Markus et al. 2013, arXiv 1305.4537) and evaluating face detectors.

    annotations  face boxes from a box file (`path x y w h`) or the WebFaces landmark file
    samples      decoded images in one flat buffer; jittered, mirrored positive windows
    learner      numba kernels: cascade evaluation on windows, level-wise tree growing
    bootstrap    hard-negative mining: random windows that still pass the cascade
    trainer      the stage loop, checkpoints, resume, progress
    evaluate     recall / false positives per image, false positives per megapixel, speed

The output is a plain pico cascade (`edge_fer.detect.Cascade`), so it runs in any pico runtime.
"""
