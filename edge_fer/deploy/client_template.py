"""Classify face crops with the edge-fer expression model served by Triton (HTTP).

Written by `edge-fer deploy triton` (MODEL_NAME below names the served model). The faces are
prepared exactly as edge-fer prepares them (edge_fer.preprocess.PreprocessSpec.prepare):
grayscale, CLAHE when the model was trained with it, resize to the input size (area
interpolation when shrinking, bilinear when enlarging), then (x / 255 - mean) / std.

    pip install tritonclient[http] opencv-python-headless numpy
    python3 triton_client.py face1.png face2.jpg
    python3 triton_client.py --model fer_trt --url jetson.local:8000 photo.jpg --box 120,80,96,96

--box x,y,w,h crops a face from a whole frame the way `edge-fer run` does: the box's square
grown by the model's crop margin on every side, the part outside the frame filled by repeating
the border. Triton's classification extension returns the top classes with their labels
(the config's label_filename); --raw prints every probability instead.

Python 3.8 or later; nothing from edge-fer is imported.
"""

import argparse
import json
import sys

import cv2
import numpy as np

# -- written by `edge-fer deploy triton` from the model's metadata ---------------------------
MODEL_NAME = "fer_onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "probs"
INPUT_SIZE = 48
CHANNELS = 1
CLAHE = False
MEAN = 0.5
STD = 0.25
CROP_MARGIN = 0.1
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# --------------------------------------------------------------------------------------------


def to_gray(img):
    if img.ndim == 2:
        return img
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img[:, :, 0]


def crop_face(gray, box, margin=CROP_MARGIN):
    """The square crop edge-fer's runtime takes around box (x, y, w, h)."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1.0 + 2.0 * margin)
    s = max(round(side), 1)
    x0, y0 = round(x + w / 2.0 - s / 2.0), round(y + h / 2.0 - s / 2.0)
    x1, y1 = x0 + s, y0 + s
    hh, ww = gray.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, ww), min(y1, hh)
    if cx1 <= cx0 or cy1 <= cy0:
        return np.zeros((s, s), np.uint8)
    crop = gray[cy0:cy1, cx0:cx1]
    pad = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
    return crop


def prepare(faces):
    """uint8 face crops (gray or BGR) -> float32 (N, CHANNELS, INPUT_SIZE, INPUT_SIZE)."""
    out = np.empty((len(faces), CHANNELS, INPUT_SIZE, INPUT_SIZE), np.float32)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)) if CLAHE else None
    for i, face in enumerate(faces):
        g = to_gray(face)
        if g.shape != (INPUT_SIZE, INPUT_SIZE):
            interp = cv2.INTER_AREA if g.shape[0] > INPUT_SIZE else cv2.INTER_LINEAR
            g = cv2.resize(g, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)
        if clahe is not None:
            g = clahe.apply(g)
        out[i, :] = g
    out *= 1.0 / (255.0 * STD)
    out -= MEAN / STD
    return out


def parse_classification(entry):
    """Triton's classification string '<value>:<index>[:<label>]' -> (label, index, value)."""
    text = entry.decode() if isinstance(entry, bytes) else str(entry)
    value, index, *label = text.split(":", 2)
    idx = int(index)
    name = label[0] if label else (CLASSES[idx] if 0 <= idx < len(CLASSES) else str(idx))
    return name, idx, float(value)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", help="face crops (or frames with --box)")
    ap.add_argument("--url", default="localhost:8000", help="Triton's HTTP endpoint")
    ap.add_argument("--model", default=MODEL_NAME, help="model name in the repository")
    ap.add_argument("--box", metavar="X,Y,W,H", help="crop this face box from each image")
    ap.add_argument("--top", type=int, default=3, help="classes to return per face")
    ap.add_argument("--raw", action="store_true", help="every probability, not the top classes")
    args = ap.parse_args(argv)

    try:
        import tritonclient.http as httpclient  # type: ignore[import-not-found]
    except ImportError:
        sys.stderr.write("triton_client: pip install 'tritonclient[http]'\n")
        return 2

    faces = []
    for path in args.images:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            sys.stderr.write(f"triton_client: cannot read {path}\n")
            return 2
        if args.box:
            img = crop_face(to_gray(img), [float(v) for v in args.box.split(",")])
        faces.append(img)
    x = prepare(faces)
    client = httpclient.InferenceServerClient(url=args.url)
    inp = httpclient.InferInput(INPUT_NAME, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    if args.raw:
        out = httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=True)
    else:  # the classification extension: top classes as "value:index:label" strings
        out = httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=True, class_count=args.top)
    result = client.infer(args.model, inputs=[inp], outputs=[out]).as_numpy(OUTPUT_NAME)
    for path, row in zip(args.images, result):
        if args.raw:
            probs = {c: round(float(p), 4) for c, p in zip(CLASSES, row)}
            print(json.dumps({"image": path, "probs": probs}))
        else:
            top = [parse_classification(e) for e in np.atleast_1d(row)]
            print(
                json.dumps(
                    {
                        "image": path,
                        "expression": top[0][0],
                        "top": [{"label": n, "index": i, "prob": round(v, 4)} for n, i, v in top],
                    }
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
