"""Classify face crops with the edge-fer expression model served by Triton (HTTP).

Written by `edge-fer deploy triton` (MODEL_NAME below names the served model). The faces are
read and prepared exactly as edge-fer does (edge_fer.imageio.imread, then
edge_fer.preprocess.PreprocessSpec.prepare): 8-bit colour with the EXIF orientation applied,
grayscale, CLAHE when the model was trained with it, resize to the input size (area
interpolation when shrinking, bilinear when enlarging), then (x / 255 - mean) / std.

    pip install tritonclient[http] opencv-python-headless numpy
    python3 triton_client.py face1.png face2.jpg
    python3 triton_client.py --model fer_trt --url jetson.local:8000 photo.jpg --box 120,80,96,96

--box x,y,w,h crops a face from a whole frame the way `edge-fer run` does: the box's square
grown by the model's crop margin on every side, the part outside the frame filled by repeating
the border (write --box=-5,10,40,40 when x is negative); like `edge-fer run`, a box whose side
is over 8x the image's larger side is refused. Triton's classification extension
returns the top classes with their labels (the config's label_filename); --raw prints every
probability instead. The faces go in requests of at most MAX_BATCH (the config's
max_batch_size); one JSON line per image, in the order given.

Python 3.8 or later; nothing from edge-fer is imported.
"""

import argparse
import http.client
import json
import math
import os
import stat
import sys
from urllib.parse import urlsplit


def interrupted(exc):
    """Whether Ctrl-C caused `exc`: a KeyboardInterrupt in its cause/context chain (one raised
    inside an extension's import can come out as an ImportError caused by it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command that Ctrl-C stopped


def quit_interrupted():
    sys.stderr.write("triton_client: interrupted (Ctrl-C)\n")
    sys.exit(INTERRUPTED)


try:
    import cv2
    import numpy as np
except KeyboardInterrupt:  # Ctrl-C while OpenCV loads
    quit_interrupted()
except ImportError as exc:  # a traceback would hide the one line that fixes it
    if interrupted(exc):
        quit_interrupted()
    sys.exit(f"triton_client: {exc}: pip install opencv-python-headless numpy")

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
# the config's max_batch_size (and the plan's batch profile): Triton refuses larger requests
MAX_BATCH = 32
# --------------------------------------------------------------------------------------------

PROG = "triton_client"
# a --box side over this many times the image's larger side is refused, as `edge-fer run`
# refuses it (edge_fer.runtime.crops.crop_face): not a face in that image, and its padded
# crop would be allocated whole (w=96000: a 13 GB array)
MAX_BOX_SCALE = 8


class Failure(Exception):
    """A mistake or a server error: one line on stderr and this exit status, no traceback."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def one_line(text):
    lines = str(text).strip().splitlines()
    return lines[0] if lines else type(text).__name__


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


def read_image(path):
    """The image as edge-fer reads it: 8-bit BGR, EXIF orientation applied (IMREAD_UNCHANGED
    kept 16-bit pixels, which prepare() does not scale, and ignored the orientation)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # reading a FIFO would wait for ever
            raise Failure(f"cannot read {path}: not a regular file", 2)
        data = np.fromfile(path, np.uint8)  # cv2.imread adds its own warning line
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc.strerror or exc}", 2) from None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise Failure(f"cannot read {path}: not an image OpenCV can decode", 2)
    return img


def face_of(path, box):
    img = read_image(path)
    if box is None:
        return img
    x, y, w, h = box
    hh, ww = img.shape[:2]
    if x >= ww or y >= hh or x + w <= 0 or y + h <= 0:  # a typo, not a face: a blank crop
        raise Failure(f"--box {x:g},{y:g},{w:g},{h:g} lies outside {path} ({ww}x{hh})", 2)
    if max(w, h) > MAX_BOX_SCALE * max(ww, hh):
        raise Failure(
            f"--box {x:g},{y:g},{w:g},{h:g} has a side over {MAX_BOX_SCALE}x the larger side "
            f"of {path} ({ww}x{hh}): not a face box of that image",
            2,
        )
    return crop_face(to_gray(img), box)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.exit(2)


def box_arg(text):
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise argparse.ArgumentTypeError(f"expected four numbers x,y,w,h, got {text!r}")
    if box[2] <= 0 or box[3] <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be > 0, got {text!r}")
    return box


def top_arg(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= len(CLASSES):
        raise argparse.ArgumentTypeError(
            f"must be a whole number 1..{len(CLASSES)} (the model's classes), got {text!r}"
        )
    return n


def url_arg(text):
    """host:port[/base] -> (that, ssl); http:// and https:// are taken (tritonclient refuses
    a scheme, and its constructor's error is followed by a warning from its __del__)."""
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in ("", "http", "https"):
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    rest = text.split("://", 1)[1] if scheme else text
    try:
        parts = urlsplit("http://" + rest)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError:
        parts = None
    if parts is None or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return rest, scheme == "https"


def quiet_event_loop_interrupts():
    """tritonclient.http waits for Triton in gevent's event loop, which printed a Ctrl-C that
    came there ("KeyboardInterrupt" and a time stamp) before passing it on to main(): put it
    in Hub.NOT_ERROR, gevent's documented list of exceptions it passes on without printing."""
    hub = sys.modules.get("gevent.hub")
    try:
        if hub is not None and not issubclass(KeyboardInterrupt, hub.Hub.NOT_ERROR):
            hub.Hub.NOT_ERROR = (*hub.Hub.NOT_ERROR, KeyboardInterrupt)
    except (AttributeError, TypeError):  # another gevent: at worst those two lines again
        pass


def infer(client, httpclient, model, x, top):
    """Probabilities (N, classes) or classification strings (N, top) of one request."""
    inp = httpclient.InferInput(INPUT_NAME, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    if top is None:
        out = httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=True)
    else:  # the classification extension: top classes as "value:index:label" strings
        out = httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=True, class_count=top)
    result = client.infer(model, inputs=[inp], outputs=[out]).as_numpy(OUTPUT_NAME)
    want = (len(x), len(CLASSES) if top is None else top)
    if result is None or result.shape != want:
        got = "no output" if result is None else f"shape {list(result.shape)}"
        raise Failure(
            f"model {model!r} returned {got} for {OUTPUT_NAME!r}, expected {list(want)}: "
            "is it the edge-fer model this script was written for?",
            1,
        )
    return result


def main(argv=None):
    ap = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", help="face crops (or frames with --box)")
    ap.add_argument(
        "--url", type=url_arg, default="localhost:8000", help="Triton's HTTP endpoint, host:port"
    )
    ap.add_argument("--model", default=MODEL_NAME, help="model name in the repository")
    ap.add_argument(
        "--box",
        type=box_arg,
        metavar="X,Y,W,H",
        help="crop this face box from each image (--box=-5,... for a negative x)",
    )
    ap.add_argument("--top", type=top_arg, default=3, help="classes to return per face")
    ap.add_argument("--raw", action="store_true", help="every probability, not the top classes")
    try:
        args = ap.parse_args(argv)
        status = run(args)
        sys.stdout.flush()  # a closed pipe raises here, not in the flush at exit
        return status
    except Failure as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return exc.status
    except BrokenPipeError:
        # the reader left (`| head -1`): stop quietly, as head's writers do. What is still
        # buffered goes to /dev/null, or the flush at exit would print an error of its own.
        # Status 1, as `edge-fer` itself and Python's documented recipe give; the shell's
        # 141 (killed by SIGPIPE) would claim a signal that never came.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except KeyboardInterrupt:
        quit_interrupted()


def run(args):
    try:
        import tritonclient.http as httpclient  # type: ignore[import-not-found]
        from tritonclient.utils import InferenceServerException  # type: ignore
    except ImportError as exc:
        if interrupted(exc):  # Ctrl-C while it loads
            raise KeyboardInterrupt from None
        raise Failure("pip install 'tritonclient[http]'", 2) from None
    quiet_event_loop_interrupts()

    # every image is read before the first request: a bad file costs no server time
    x = np.concatenate([prepare([face_of(path, args.box)]) for path in args.images])
    url, ssl = args.url
    client = httpclient.InferenceServerClient(url=url, ssl=ssl)
    try:
        for start in range(0, len(x), MAX_BATCH):
            try:
                rows = infer(
                    client,
                    httpclient,
                    args.model,
                    x[start : start + MAX_BATCH],
                    None if args.raw else args.top,
                )
            except InferenceServerException as exc:  # the server's answer: unknown model, ...
                raise Failure(f"Triton at {url}: {one_line(exc)}", 1) from None
            except (OSError, http.client.HTTPException) as exc:  # refused, no such host, ...
                reason = getattr(exc, "strerror", None) or one_line(exc)
                raise Failure(f"cannot reach Triton at {url}: {reason}", 1) from None
            for path, row in zip(args.images[start : start + MAX_BATCH], rows):
                print(json.dumps(record(path, row, args.raw)))
    finally:
        client.close()
    return 0


def record(path, row, raw):
    if raw:
        return {"image": path, "probs": {c: round(float(p), 4) for c, p in zip(CLASSES, row)}}
    top = [parse_classification(e) for e in np.atleast_1d(row)]
    return {
        "image": path,
        "expression": top[0][0],
        "top": [{"label": n, "index": i, "prob": round(v, 4)} for n, i, v in top],
    }


if __name__ == "__main__":
    sys.exit(main())
