"""`edge-fer keras`: bring a Keras classifier into edge-fer (extra `keras`).

    edge-fer keras import MODEL.hdf5 --out model.onnx [--scale -1,1 --classes fer2013]
    edge-fer keras prune  MODEL.hdf5 --data FER2013 --sparsity 0.5 --epochs 1 --out pruned.onnx
    edge-fer keras qat    MODEL.hdf5 --data FER2013 --epochs 1 --out qat.onnx

TensorFlow is imported only when one of these runs (edge_fer.keras_import._tf).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge_fer.cli.common import HelpFormatter, thread_count
from edge_fer.cli.options import input_path

EPILOG = (
    "The ONNX file takes float32 NCHW 'input' (any batch) and returns softmax 'probs', with "
    "the preprocessing, classes and provenance in its metadata: `edge-fer eval/classify/run` "
    "and the TensorRT build use it like a model from `edge-fer export`. Needs the keras extra: "
    "python3 -m pip install '.[keras]' in the edge-fer checkout (TensorFlow, tf-keras, tf2onnx, "
    "tensorflow-model-optimization)."
)


def _common(p, data_required: bool) -> None:
    p.add_argument(
        "model", metavar="MODEL", help="Keras model: .h5/.hdf5, .keras or a SavedModel folder"
    )
    p.add_argument("--out", required=True, help="output model file (.onnx)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out file"
        + (" (and --save-keras file)" if data_required else ""),  # prune and qat have it
    )
    p.add_argument(
        "--trust-model-code",
        action="store_true",
        help="load a model that holds code: Lambda layers (Python bytecode that loading "
        "runs), custom layer classes, SavedModel folders. Model files from others are "
        "code: use this only for a file whose source you trust [default: such models "
        "are refused]",
    )
    if data_required:
        p.add_argument(
            "--data",
            type=input_path,
            required=True,
            help="labelled faces for fine-tuning: FER2013 folders or csv (its "
            "Training split) or one folder per class; its validation split (or a "
            "sample of it) also serves the parity check",
        )
    g = p.add_argument_group("model description (the preprocessing stored in the ONNX)")
    g.add_argument(
        "--input-size", type=int, default=None, help="input side in pixels [default: the model's]"
    )
    g.add_argument(
        "--scale",
        default="-1,1",
        help="LO,HI: pixel values the model wants (-1,1: x/127.5-1, as the "
        "mini-Xception; 0,1: x/255)",
    )
    g.add_argument(
        "--classes",
        default=None,
        help="class names in output order: a label set (fer2013, affectnet8, ...) "
        "or comma-separated names [default: fer2013 for 7 outputs]",
    )
    # fmt: off
    g.add_argument("--crop-margin", type=float, default=0.1,
                   help="border the runtime adds around a detected face, fraction of its size")
    g.add_argument("--clahe", action="store_true", help="the model was trained on CLAHE faces")
    g.add_argument("--add-softmax", default="auto", choices=("auto", "yes", "no"),
                   help="auto: add a softmax when the last layer outputs logits")
    c = p.add_argument_group("conversion")
    c.add_argument("--opset", type=int, default=17, help="ONNX opset")
    c.add_argument("--name", default=None,
                   help="arch name in the metadata, keras:NAME [default: the file's stem]")
    c.add_argument("--no-check", action="store_true",
                   help="skip the Keras vs ONNX Runtime parity check")
    # fmt: on
    if not data_required:
        c.add_argument(
            "--check-data",
            default=None,
            help="dataset whose faces the parity check uses (its validation split) "
            "[default: random images, with a warning]",
        )
    c.add_argument(
        "--threads",
        type=thread_count,
        default=0,
        help="TensorFlow threads (0: TensorFlow's default)",
    )


def _training(p, lr: float, keras_formats: str) -> None:
    t = p.add_argument_group("fine-tuning")
    t.add_argument("--epochs", type=int, default=1, help="passes over the training faces")
    t.add_argument("--batch-size", type=int, default=64, help="faces per step")
    t.add_argument("--lr", type=float, default=lr, help="Adam learning rate")
    # fmt: off
    t.add_argument("--limit", type=int, default=None,
                   help="fine-tune on this many faces (a random subset) [default: all]")
    t.add_argument("--seed", type=int, default=0, help="seed of the subset and the training")
    t.add_argument("--save-keras", default=None, metavar="PATH",
                   help=f"also save the compressed Keras model here ({keras_formats})")
    # fmt: on
    t.add_argument("--quiet", action="store_true", help="no per-epoch training lines")


def register(sub) -> None:
    fmt = HelpFormatter
    # fmt: off
    p = sub.add_parser("keras",
                       help="import, prune or quantise a Keras classifier into ONNX (needs "
                       "edge-fer[keras])",
                       description="Bring a Keras/HDF5 expression classifier into edge-fer: "
                       "convert it to ONNX (tf2onnx), optionally after pruning or "
                       "quantisation-aware training with tensorflow-model-optimization.",
                       epilog=EPILOG, formatter_class=fmt)
    ks = p.add_subparsers(dest="keras_command", metavar="ACTION")
    imp = ks.add_parser("import", help="convert a Keras model to an edge-fer ONNX model",
                        description="Convert a Keras classifier to ONNX with the edge-fer "
                        "metadata, check ONNX Runtime against Keras on faces (max |dp| <= 1e-4) "
                        "and write it atomically.", epilog=EPILOG, formatter_class=fmt)
    # fmt: on
    _common(imp, data_required=False)
    imp.set_defaults(func=_filtered(run_import))

    # fmt: off
    pr = ks.add_parser("prune", help="magnitude-prune while fine-tuning, then convert",
                       description="Prune the conv/dense kernels to --sparsity with tfmot's "
                       "prune_low_magnitude (polynomial schedule over the first 3/4 of the steps, "
                       "UpdatePruningStep) while fine-tuning on --data, strip the pruning wrappers "
                       "and convert to ONNX. Zeros make the file compress better; dense kernels "
                       "run as fast as before.", epilog=EPILOG, formatter_class=fmt)
    _common(pr, data_required=True)
    pr.add_argument("--sparsity", dest="target_sparsity", type=float, default=0.5,
                    help="fraction of each pruned kernel set to zero")
    pr.add_argument("--freeze-bn", action="store_true",
                    help="keep the batch-norm statistics fixed during fine-tuning")
    # fmt: on
    _training(pr, lr=1e-4, keras_formats=".h5 or .keras")
    pr.set_defaults(func=_filtered(run_prune))

    # fmt: off
    q = ks.add_parser("qat", help="quantisation-aware training, then convert to a Q/DQ ONNX model",
                      description="Quantisation-aware training with tfmot's quantize_model (8-bit "
                      "default scheme; when it rejects a layer, only the supported layers are "
                      "quantised) on --data, then conversion: tf2onnx writes the fake-quantisation "
                      "as QuantizeLinear/DequantizeLinear pairs that ONNX Runtime runs in int8.",
                      epilog=EPILOG, formatter_class=fmt)
    # fmt: on
    _common(q, data_required=True)
    _training(
        q, lr=1e-5, keras_formats=".h5; tf-keras cannot load its quantize layers back from .keras"
    )
    q.set_defaults(func=_filtered(run_qat))

    def no_action(args) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=no_action)


# -- actions ----------------------------------------------------------------------------------


def _filtered(action):
    """The action with TensorFlow's native start-up lines (CUDA probing, absl) kept off
    stderr; everything else printed there passes."""

    def run(args) -> int:
        from edge_fer.keras_import._tf import native_noise_filtered

        with native_noise_filtered():
            return action(args)

    return run


def _load(args):
    from edge_fer.errors import UserError
    from edge_fer.fileio import check_collisions, is_stream, names_folder
    from edge_fer.keras_import import _tf
    from edge_fer.keras_import.convert import keras_spec, load_keras, parse_scale, sniff_keras

    # before: `keras import m.hdf5 --out m.hdf5` replaced the Keras model with the ONNX one
    outputs = [("--out", args.out), ("--save-keras", getattr(args, "save_keras", None))]
    check_collisions(outputs, [("MODEL", args.model)])
    for flag, out in outputs:
        # a device or pipe (/dev/stdout) is written through, never "replaced"
        if out is None or is_stream(out):
            continue
        if names_folder(out) or Path(out).is_dir():
            raise UserError(f"{flag} {out}: is a folder; give a file name")
        if (Path(out).exists() or Path(out).is_symlink()) and not args.force:
            raise UserError(f"{flag} {out}: exists; pass --force to replace it")
    scale = parse_scale(args.scale)
    sniff_keras(Path(args.model))  # a wrong file is reported before TensorFlow loads
    _tf.set_threads(args.threads)
    model = load_keras(args.model, trust_code=args.trust_model_code)
    spec = keras_spec(
        model,
        classes=args.classes,
        scale=scale,
        input_size=args.input_size,
        crop_margin=args.crop_margin,
        clahe=args.clahe,
    )
    return model, spec


def _convert(args, model, spec, check, compression=None, stats_model=None) -> dict:
    """`check`: the parity check's data (import's --check-data) or (faces, description)."""
    from edge_fer.keras_import.convert import keras_to_onnx

    faces, source = check if isinstance(check, tuple) else (None, None)
    return keras_to_onnx(
        model,
        args.out,
        spec,
        source=args.model,
        name=args.name,
        opset=args.opset,
        add_softmax=args.add_softmax,
        check=not args.no_check,
        check_faces=faces,
        check_data=None if isinstance(check, tuple) else check,
        check_source=source,
        compression=compression,
        stats_model=stats_model,
    )


def _print(report: dict, what: str) -> None:
    print(json.dumps(report))
    check = (
        f", parity max |dp| {report['parity_max_abs_diff']:.2g} (top-1 agreement "
        f"{report['parity_top1_agreement']:.3f})"
        if "parity_max_abs_diff" in report
        else ", parity not checked"
    )
    print(
        f"{what} {report['arch']} ({report['params']:,} params, "
        f"{report['macs'] / 1e6:.1f} MMACs) -> {report['out']}{check}",
        file=sys.stderr,
    )


def _before_training(args, spec):
    """Everything that can be refused, checked before the fine-tuning (before: an opset out of
    range, a --save-keras name or a dataset without a validation split were refused after
    it). Returns the parity check's (faces, description), or None with --no-check."""
    from edge_fer.errors import UserError
    from edge_fer.keras_import.compress import check_training_args
    from edge_fer.keras_import.convert import check_faces_from, check_opset

    check_opset(args.opset)
    check_training_args(args.epochs, args.batch_size, args.lr, args.seed)
    if args.save_keras and Path(args.save_keras).suffix.lower() not in (".h5", ".hdf5", ".keras"):
        raise UserError(f"--save-keras {args.save_keras}: use a .h5, .hdf5 or .keras file name")
    return None if args.no_check else check_faces_from(spec, args.data)


def _keras_bytes(model, path: str | None) -> bytes | None:
    """The Keras file's bytes, made before anything is written: the ONNX model and the Keras
    file land together (before: --save-keras was written first, so a failed conversion or a
    Ctrl-C left a new Keras file, or replaced the user's, without its ONNX model)."""
    if not path:
        return None
    import tempfile
    import warnings

    from edge_fer.errors import UserError
    from edge_fer.fileio import os_error_reason

    suffix = Path(path).suffix.lower()
    try:  # tf-keras writes by name: into a private folder
        with tempfile.TemporaryDirectory(prefix="edge-fer-keras-") as tmp_dir:
            tmp = Path(tmp_dir) / f"model{suffix}"
            with warnings.catch_warnings():  # "HDF5 is a legacy format": the user chose it
                warnings.simplefilter("ignore")
                model.save(str(tmp))
            return tmp.read_bytes()
    except OSError as exc:
        raise UserError(f"--save-keras: cannot save the model ({os_error_reason(exc)})") from None


def _write_keras(path: str | None, data: bytes | None) -> None:
    if path and data is not None:
        from edge_fer.fileio import save_bytes

        save_bytes(path, data)


def run_import(args) -> int:
    from edge_fer.errors import UserError

    if args.no_check and args.check_data is not None:
        raise UserError("--check-data is the parity check's data: it does nothing with --no-check")
    model, spec = _load(args)
    report = _convert(args, model, spec, args.check_data)
    _print(report, "imported")
    return 0


def run_prune(args) -> int:
    from edge_fer.keras_import.compress import prune_keras

    model, spec = _load(args)
    check = _before_training(args, spec)
    pruned, rep = prune_keras(
        model, args.data, spec, target_sparsity=args.target_sparsity, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, limit=args.limit, seed=args.seed,
        freeze_bn=args.freeze_bn, add_softmax=args.add_softmax,
        verbose=0 if args.quiet else 2,
    )  # fmt: skip
    keras_file = _keras_bytes(pruned, args.save_keras)
    report = _convert(args, pruned, spec, check, compression=_slim(rep))
    _write_keras(args.save_keras, keras_file)
    _print(report, f"pruned to {rep['sparsity']:.1%} sparsity:")
    return 0


def run_qat(args) -> int:
    from edge_fer.errors import UserError
    from edge_fer.keras_import.compress import quantize_keras

    if args.save_keras and Path(args.save_keras).suffix.lower() == ".keras":
        raise UserError(
            "--save-keras: save a QAT model as .h5 (tf-keras 2.21 cannot load tfmot's "
            "quantisation layers back from a .keras archive)"
        )
    model, spec = _load(args)
    check = _before_training(args, spec)
    q, rep = quantize_keras(
        model, args.data, spec, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        limit=args.limit, seed=args.seed, add_softmax=args.add_softmax,
        verbose=0 if args.quiet else 2,
    )  # fmt: skip
    keras_file = _keras_bytes(q, args.save_keras)
    report = _convert(args, q, spec, check, compression=_slim(rep), stats_model=model)
    _write_keras(args.save_keras, keras_file)
    _print(report, "quantisation-aware trained:")
    return 0


def _slim(rep: dict) -> dict:
    """The compression report without the per-layer detail (kept in the CLI's JSON line)."""
    return {k: v for k, v in rep.items() if k != "per_layer_sparsity"}
