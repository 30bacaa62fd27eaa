"""fmnist-tf command line: parses arguments, calls the library, prints known errors as one line."""

import argparse
import json
import os
import sys

from fmnist_tf.errors import FmnistError

PROG = "fmnist-tf"
DATA_HELP = ("Fashion-MNIST source: a folder with the four IDX .gz files (md5-checked) or a Kaggle-style "
             "CSV. Default: $FMNIST_DATA_DIR, then ~/.keras/datasets/fashion-mnist, then a download")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints the whole usage block on a bad argument; we print one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _examples(*lines):
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_config_overrides(parser):
    from fmnist_tf.config import FIELDS, describe_key

    group = parser.add_argument_group("config overrides (any key of the YAML file; see configs/)")
    for name, f in FIELDS.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"set_{name}", metavar="V",
                           help=f"{f.metadata['help']} ({describe_key(f)})")


def build_parser():
    from fmnist_tf.realtime.modes import MODES

    parser = OneLineErrorParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keras 3 / TensorFlow toolkit for Fashion-MNIST: train, evaluate and use classifiers.",
        epilog=_examples(f"{PROG} train -c deep", f"{PROG} evaluate runs/deep-20261124-101500",
                         f"{PROG} predict runs/deep-20261124-101500 shoe.jpg",
                         f"{PROG} realtime -v video.mp4 -o annotated.mp4",
                         f"{PROG} export runs/deep-20261124-101500 --format tflite",
                         f"{PROG} SUBCOMMAND --help   (every subcommand has examples)"))
    common = OneLineErrorParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks and TensorFlow logs")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True,
                                parser_class=OneLineErrorParser)

    def add(name, help, examples):
        return sub.add_parser(name, help=help, description=help, parents=[common], epilog=examples,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    train = add("train", "train a classifier from a config; writes a run directory",
                _examples(f"{PROG} train -c deep",
                          f"{PROG} train -c baseline --epochs 3 --batch-size 64 --out runs/try",
                          f"FMNIST_DATA_DIR=../shared/data/fashion-mnist {PROG} train -c deep --augment false",
                          f"{PROG} train --resume runs/deep-20261124-101500   (continue after a crash)"))
    train.add_argument("-c", "--config", default=None,
                       help="config name in configs/ (baseline, deep) or a YAML path")
    train.add_argument("--data", help=DATA_HELP)
    train.add_argument("--out", help="run directory (default runs/<model>-<timestamp>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last epoch")
    _add_config_overrides(train)

    evaluate = add("evaluate", "score a run or model on the test split; print tables, save metrics.json and plots",
                   _examples(f"{PROG} evaluate runs/smoke", f"{PROG} evaluate model.keras --out eval/"))
    evaluate.add_argument("model", metavar="RUN_DIR_OR_MODEL")
    evaluate.add_argument("--data", help=DATA_HELP)
    evaluate.add_argument("--out", help="where metrics.json and plots/ go (default: the run directory)")
    evaluate.add_argument("--batch-size", type=positive_int, default=256)

    predict = add("predict", "classify image files (PNG/JPEG, any size, colour or grey, any background)",
                  _examples(f"{PROG} predict runs/smoke shirt.png boot.jpg",
                            f"{PROG} predict runs/smoke/best.keras photos/*.jpg --json"))
    predict.add_argument("model", metavar="RUN_DIR_OR_MODEL")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--json", action="store_true", help="print one JSON document")
    predict.add_argument("--top", type=positive_int, default=3, help="classes to report per image (default 3)")

    predict.add_argument("--backend", choices=("auto", "litert", "keras"), default="keras",
                         help="how a .keras model runs (default keras; exported files run as they are)")

    realtime = add("realtime", "classify the items in a video file or webcam stream, frame by frame",
                   _examples(f"{PROG} realtime -v video.mp4 -o annotated.mp4 --save-csv predictions.csv",
                             f"{PROG} realtime --camera 0 --model runs/deep-20261124-101500",
                             f"{PROG} realtime -v video.mp4 --model runs/x/export/best.tflite --no-show",
                             "keys: q quits the window; Ctrl-C stops and still finalises the outputs"))
    source = realtime.add_mutually_exclusive_group()
    source.add_argument("-v", "--video", help="video file (default: the webcam)")
    source.add_argument("--camera", type=int, default=None, metavar="N", help="webcam index (default 0)")
    realtime.add_argument("-o", "--output", metavar="OUT.mp4", help="write the annotated video here")
    realtime.add_argument("--model", metavar="RUN_OR_FILE", default=None,
                          help="run directory, .keras, .tflite, .onnx or SavedModel folder "
                               "(default: the newest run in ./runs)")
    realtime.add_argument("--mode", default="classify", choices=sorted(MODES), help="what to do per frame (default classify)")
    realtime.add_argument("--save-csv", metavar="PATH", help="one row per item per frame: class, probability, box")
    realtime.add_argument("--min-probability", type=float, default=0.5,
                          help="label items at or above this probability; others show '?' (default 0.5)")
    realtime.add_argument("--backend", choices=("auto", "litert", "keras"), default="auto",
                          help="how a .keras model runs: auto converts it to LiteRT in memory, falling "
                               "back to a compiled tf.function (default auto)")
    realtime.add_argument("--no-show", action="store_true", help="never open a window (automatic when headless)")
    realtime.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")

    export = add("export", "export a trained model for fast inference elsewhere; checks the numbers after",
                 _examples(f"{PROG} export runs/deep-20261124-101500 --format tflite",
                           f"{PROG} export runs/deep-20261124-101500 --format tflite --quantize int8",
                           f"{PROG} export model.keras --format savedmodel --out exported/",
                           f"{PROG} predict runs/deep-20261124-101500/export/best.tflite shirt.png"))
    export.add_argument("model", metavar="RUN_DIR_OR_MODEL")
    export.add_argument("--format", required=True, choices=("savedmodel", "tflite", "onnx"))
    export.add_argument("--quantize", choices=("int8",), default=None,
                        help="int8 weights and activations (tflite only), calibrated on training images")
    export.add_argument("--out", help="output path (default: <run>/export/<model>.<format>)")
    export.add_argument("--data", help=DATA_HELP + " (for calibration and the numeric check)")

    add("models", "list registered models and available configs", _examples(f"{PROG} models"))
    return parser


def _overrides(args):
    return {key[4:]: value for key, value in vars(args).items()
            if key.startswith("set_") and value is not None}


def cmd_train(args):
    from fmnist_tf.config import load_config
    from fmnist_tf.train.fit import resume_config, train

    if args.resume:
        if args.config or args.out:
            raise FmnistError("--resume continues a run with its own config and directory; "
                              "drop -c/--out (config keys such as --epochs may still be overridden)")
        config = resume_config(args.resume, _overrides(args))
    else:
        if not args.config:
            raise FmnistError("choose a config with -c NAME (e.g. -c deep) or continue a run with --resume DIR")
        config = load_config(args.config, _overrides(args))
    run_dir = train(config, data=args.data, out=args.out, resume=args.resume)
    print(f"run saved in {run_dir}; next: {PROG} evaluate {run_dir}")


def cmd_evaluate(args):
    from fmnist_tf.evaluate.report import evaluate

    evaluate(args.model, data=args.data, out=args.out, batch_size=args.batch_size)


def cmd_predict(args):
    from fmnist_tf.predict import predict_images

    results = predict_images(args.model, args.images, top=args.top, backend=args.backend)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        others = ", ".join(f"{t['name']} {t['probability']:.2f}" for t in result["top"][1:])
        print(f"{result['path']}: {result['name']} ({result['probability']:.2f})"
              + (f"  [then {others}]" if others else ""))


def cmd_realtime(args):
    from fmnist_tf.inference import open_classifier
    from fmnist_tf.modelio import newest_run
    from fmnist_tf.realtime import FrameSource, create_mode, run_realtime

    source = FrameSource(video=args.video, camera=args.camera)  # a bad video fails before the model loads
    try:
        classifier = open_classifier(args.model or newest_run("runs"), backend=args.backend)
        mode = create_mode(args.mode, classifier, min_probability=args.min_probability)
    except BaseException:
        source.close()
        raise
    print(f"{source.name}: {source.size[0]}x{source.size[1]} at {source.fps:.0f} fps; "
          f"model {classifier.source} ({classifier.backend})")
    report = run_realtime(source, mode, output=args.output, csv_path=args.save_csv,
                          show=False if args.no_show else None, max_frames=args.max_frames)
    print(report.summary())


def cmd_export(args):
    from fmnist_tf.export import export_model, format_export_report

    result = export_model(args.model, args.format, out=args.out, quantize=args.quantize, data=args.data)
    print(format_export_report(result))


def cmd_models(args):
    from fmnist_tf.config import available_configs
    from fmnist_tf.models import model_names

    print("models: " + ", ".join(model_names()))
    print("configs: " + ", ".join(available_configs()))


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "realtime": cmd_realtime,
            "export": cmd_export, "models": cmd_models}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's per-frame decode complaints
    try:
        COMMANDS[args.command](args)
    except FmnistError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unknown failure: still one line, the traceback is behind --debug
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{PROG}: error: {type(exc).__name__}: {message[:300]} (rerun with --debug for details)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
