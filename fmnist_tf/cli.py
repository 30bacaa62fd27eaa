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
    parser = OneLineErrorParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keras 3 / TensorFlow toolkit for Fashion-MNIST: train, evaluate and use classifiers.",
        epilog=_examples(f"{PROG} train -c deep", f"{PROG} evaluate runs/deep-20261124-101500",
                         f"{PROG} predict runs/deep-20261124-101500 shoe.jpg",
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

    results = predict_images(args.model, args.images, top=args.top)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        others = ", ".join(f"{t['name']} {t['probability']:.2f}" for t in result["top"][1:])
        print(f"{result['path']}: {result['name']} ({result['probability']:.2f})"
              + (f"  [then {others}]" if others else ""))


def cmd_models(args):
    from fmnist_tf.config import available_configs
    from fmnist_tf.models import model_names

    print("models: " + ", ".join(model_names()))
    print("configs: " + ", ".join(available_configs()))


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "models": cmd_models}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
