"""fmnist-tf command line: parses arguments, calls the library, prints known errors as one line."""

import argparse
import json
import os
import sys
from pathlib import Path

from fmnist_tf.errors import FmnistError

PROG = "fmnist-tf"
SECOND_STAGE_HELP = ("a Fashion-MNIST classifier run or model file that re-classifies every detected box "
                     "(the detector finds the items, the classifier names them; see README, Detection)")
DATA_HELP = ("data: a folder with the four Fashion-MNIST IDX .gz files (md5-checked), a Kaggle-style CSV, or "
             "an image folder (one subfolder per class, with train/ and test/ subtrees or else split 80/20; or "
             "the Tiny ImageNet layout). Default: $FMNIST_DATA_DIR, then ~/.keras/datasets/fashion-mnist, "
             "then a download")


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


def canvas_size(text):
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    if min(width, height) < 32:
        raise argparse.ArgumentTypeError(f"canvas sides must be at least 32 px, got {text!r}")
    return width, height


def _examples(*lines):
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_config_overrides(parser):
    from fmnist_tf.config import FIELDS, describe_key

    group = parser.add_argument_group("config overrides (any key of the YAML file; see configs/)")
    for name, f in FIELDS.items():
        switch = {"nargs": "?", "const": "true"} if f.type is bool else {}  # `--augment` alone means true
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"set_{name}", metavar="V",
                           help=f"{f.metadata['help']} ({describe_key(f)})", **switch)


def build_parser():
    from fmnist_tf.realtime.modes import MODES

    parser = OneLineErrorParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keras 3 / TensorFlow toolkit for Fashion-MNIST: train, evaluate and use classifiers.",
        epilog=_examples(f"{PROG} train -c deep", f"{PROG} evaluate runs/deep-20261124-101500",
                         f"{PROG} predict runs/deep-20261124-101500 shoe.jpg",
                         f"{PROG} cam runs/deep-20261124-101500 shoe.jpg",
                         f"{PROG} embed runs/embedding-20261124-101500 shoe.jpg --gallery photos/",
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

    train = add("train", "train a classifier, transfer head, embedding or detector from a config; writes a run directory",
                _examples(f"{PROG} train -c deep",
                          f"{PROG} train -c baseline --epochs 3 --batch-size 64 --out runs/try",
                          f"FMNIST_DATA_DIR=../shared/data/fashion-mnist {PROG} train -c deep --augment false",
                          f"{PROG} train -c tinyyolov3 --data datasets/fmnist-multi --input-size 256",
                          f"{PROG} train -c transfer --from runs/deep-20261124-101500 --data my_photos/",
                          f"{PROG} train -c transfer --base MobileNetV2 --weights mobilenet_v2_notop.h5 --data tiny-imagenet-200/",
                          f"{PROG} train -c embedding",
                          f"{PROG} train -c embedding_classifier --from runs/embedding-20261124-101500",
                          f"{PROG} train --resume runs/deep-20261124-101500   (continue after a crash)"))
    train.add_argument("-c", "--config", default=None,
                       help="config name in configs/ (baseline, deep, vgg_rescam, efficientnet_b0, transfer, "
                            "embedding, embedding_classifier, tinyyolov3; see `fmnist-tf models`) or a YAML path")
    train.add_argument("--data", help=DATA_HELP + "; for tinyyolov3, a `detect-data` folder")
    train.add_argument("--out", help="run directory (default runs/<model>-<timestamp>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last epoch")
    train.add_argument("--from", dest="set_base", metavar="RUN_OR_MODEL",
                       help="transfer / embedding_classifier: the run directory or .keras file whose backbone "
                            "to start from (same as --base)")
    _add_config_overrides(train)

    evaluate = add("evaluate", "score a run or model on the test split; print tables, save metrics.json and plots",
                   _examples(f"{PROG} evaluate runs/smoke", f"{PROG} evaluate model.keras --out eval/",
                             f"{PROG} evaluate runs/smoke --flip-tta --out runs/smoke/flip-tta",
                             f"{PROG} evaluate runs/tinyyolov3-20261124-101500   (a detector: COCO mAP on "
                             "the test canvases, per-class table, PR curves)",
                             f"{PROG} evaluate runs/tinyyolov3-20261124-101500 --classifier runs/deep-20261124-101500"))
    evaluate.add_argument("model", metavar="RUN_DIR_OR_MODEL")
    evaluate.add_argument("--data", help=DATA_HELP)
    evaluate.add_argument("--out", help="where metrics.json and plots/ go (default: the run directory)")
    evaluate.add_argument("--batch-size", type=positive_int, default=256)
    evaluate.add_argument("--classifier", metavar="RUN_OR_MODEL", help=SECOND_STAGE_HELP + " (report in RUN/second-stage/)")
    evaluate.add_argument("--flip-tta", action="store_true",
                          help="test-time augmentation: average each prediction with that of the mirror "
                               "image (for data whose classes survive a horizontal flip, as Fashion-MNIST's)")

    predict = add("predict", "classify image files (PNG/JPEG, any size, colour or grey, any background)",
                  _examples(f"{PROG} predict runs/smoke shirt.png boot.jpg",
                            f"{PROG} predict runs/smoke/best.keras photos/*.jpg --json"))
    predict.add_argument("model", metavar="RUN_DIR_OR_MODEL")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--json", action="store_true", help="print one JSON document")
    predict.add_argument("--top", type=positive_int, default=3, help="classes to report per image (default 3)")

    predict.add_argument("--backend", choices=("auto", "litert", "keras"), default="keras",
                         help="how a .keras model runs (default keras; exported files run as they are)")

    realtime = add("realtime", "classify (or detect) the items in a video file or webcam stream, frame by frame",
                   _examples(f"{PROG} realtime -v video.mp4 -o annotated.mp4 --save-csv predictions.csv",
                             f"{PROG} realtime -v video.mp4 --mode detect --model runs/tinyyolov3-20261124-101500",
                             f"{PROG} realtime --camera 0 --model runs/deep-20261124-101500",
                             f"{PROG} realtime -v video.mp4 --mode cam --model runs/vgg_rescam-20261124-101500",
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
                          help="classify: label items at or above this probability, others show '?'; "
                               "detect: the score threshold (default 0.5)")
    realtime.add_argument("--backend", choices=("auto", "litert", "keras"), default="auto",
                          help="how a .keras model runs: auto converts it to LiteRT in memory, falling "
                               "back to a compiled tf.function (default auto)")
    realtime.add_argument("--classifier", metavar="RUN_OR_MODEL", help="--mode detect: " + SECOND_STAGE_HELP)
    realtime.add_argument("--no-show", action="store_true", help="never open a window (automatic when headless)")
    realtime.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")

    cam = add("cam", "show where the model looks: class activation map, heat overlay and the CAM box per image",
              _examples(f"{PROG} cam runs/vgg_rescam-20261124-101500 shirt.png boot.jpg",
                        f"{PROG} cam runs/deep-20261124-101500 photos/*.jpg --out cams/ --threshold 0.3",
                        "vgg_rescam: the true CAM from its GAP branch; any other classifier: Grad-CAM on its "
                        "last conv map of at least 7x7 (or --layer NAME)"))
    cam.add_argument("model", metavar="RUN_DIR_OR_MODEL", help="run directory or .keras file (not an export)")
    cam.add_argument("images", nargs="+", metavar="IMAGE")
    cam.add_argument("--out", default="runs/cam", help="folder for <image>_cam.png and <image>_cam.json "
                                                       "(default runs/cam)")
    cam.add_argument("--threshold", type=float, default=0.2,
                     help="box: keep CAM pixels at or above this fraction of its maximum, then the largest "
                          "connected component (default 0.2, the CAM paper's)")
    cam.add_argument("--layer", default=None, help="Grad-CAM: the layer to explain (default: the last conv "
                                                   "map of at least 7x7)")

    embed = add("embed", "image retrieval with an embedding run: the gallery images nearest to each query image",
                _examples(f"{PROG} embed runs/embedding-20261124-101500 boot.jpg --gallery shop_photos/",
                          f"{PROG} embed runs/embedding-20261124-101500 q1.png q2.png --gallery gallery/ --top 3 --json",
                          "a gallery image's label is its subfolder's name (gallery/<label>/*.png), if any"))
    embed.add_argument("model", metavar="RUN_DIR_OR_MODEL", help="an embedding run (fmnist-tf train -c embedding)")
    embed.add_argument("images", nargs="+", metavar="IMAGE")
    embed.add_argument("--gallery", required=True, metavar="DIR", help="folder of images to search (recursively)")
    embed.add_argument("--top", type=positive_int, default=5, help="neighbours per query (default 5)")
    embed.add_argument("--json", action="store_true", help="print one JSON document")

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

    detect_data = add("detect-data", "synthesize detection canvases of Fashion-MNIST items, with "
                      "keras-yolo3 and COCO annotations and preview images",
                      _examples(f"{PROG} detect-data", f"{PROG} detect-data --preset reference --out datasets/reference",
                                f"{PROG} detect-data --n-train 20000 --n-val 1000 --max-items 6 --seed 1"))
    detect_data.add_argument("--out", default=None, help="output folder (default datasets/fmnist-<preset>)")
    detect_data.add_argument("--preset", choices=("multi", "reference"), default="multi",
                             help="multi: 1-N items at random scales on varied backgrounds; reference: one "
                                  "280x280 item centred on 640x480 green (default multi)")
    detect_data.add_argument("--n-train", type=positive_int, default=8000, help="training canvases (default 8000)")
    detect_data.add_argument("--n-val", type=positive_int, default=500, help="validation canvases (default 500)")
    detect_data.add_argument("--n-test", type=int, default=500, help="test canvases, 0 for none (default 500)")
    detect_data.add_argument("--max-items", type=positive_int, default=None, help="items per canvas at most (multi: 4)")
    detect_data.add_argument("--canvas-size", type=canvas_size, default=None, metavar="WxH",
                             help="canvas size, e.g. 320x240 (default 640x480; item sizes scale with it)")
    detect_data.add_argument("--seed", type=int, default=0, help="same seed, same canvases (default 0)")
    detect_data.add_argument("--data", help=DATA_HELP)

    detect = add("detect", "find Fashion-MNIST items with a trained detector in an image, a folder, "
                           "a video or a webcam",
                 _examples(f"{PROG} detect runs/tinyyolov3-20261124-101500 canvas.jpg",
                           f"{PROG} detect runs/tinyyolov3-20261124-101500 photos/ --out found/ --conf 0.5",
                           f"{PROG} detect runs/tinyyolov3-20261124-101500 video.mp4 -o boxed.mp4 --save-csv boxes.csv",
                           f"{PROG} detect runs/tinyyolov3-20261124-101500/export/best.tflite 0   (webcam 0)",
                           f"{PROG} detect runs/tinyyolov3-20261124-101500 photos/ --classifier runs/deep-20261124-101500"))
    detect.add_argument("model", metavar="MODEL", help="detector run directory, .keras or exported .tflite")
    detect.add_argument("source", metavar="SOURCE", help="image file, folder of images, video file or webcam index")
    detect.add_argument("--conf", type=float, default=0.3, help="score threshold (default 0.3)")
    detect.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold, per class (default 0.45)")
    detect.add_argument("--out", help="images: folder for annotated copies, detections.csv and labels/ "
                                      "(default runs/detect/<source name>)")
    detect.add_argument("-o", "--output", metavar="OUT.mp4", help="video/webcam: write the annotated video here")
    detect.add_argument("--save-csv", metavar="PATH", help="video/webcam: one row per detection per frame")
    detect.add_argument("--backend", choices=("auto", "litert", "keras"), default="auto",
                        help="how a .keras model runs (default auto: LiteRT in memory, else tf.function)")
    detect.add_argument("--classifier", metavar="RUN_OR_MODEL", help=SECOND_STAGE_HELP)
    detect.add_argument("--show", action="store_true", help="images: show each annotated image in a window")
    detect.add_argument("--no-show", action="store_true", help="video: never open a window")
    detect.add_argument("--max-frames", type=positive_int, default=None, help="video: stop after this many frames")

    anchors = add("detect-anchors", "fit detector anchors to an annotation file (k-means, 1 - IoU distance)",
                  _examples(f"{PROG} detect-anchors datasets/fmnist-multi/train.txt -k 6 --input-size 320",
                            "then put the printed line in a config: anchors: '12,30 ...'"))
    anchors.add_argument("annotations", metavar="ANNOT", help="keras-yolo3 annotation file")
    anchors.add_argument("-k", type=positive_int, default=6, help="number of anchors (default 6; TinyYoloV3 uses 6)")
    anchors.add_argument("--input-size", type=positive_int, default=320, help="model input side (default 320)")
    anchors.add_argument("--seed", type=int, default=0)

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
    from yolo.evaluate import evaluate_detector, is_detector_run

    if is_detector_run(args.model):
        if args.flip_tta:
            raise FmnistError("--flip-tta applies to classifiers and embeddings, not to a detector")
        evaluate_detector(args.model, data=args.data, out=args.out, classifier=args.classifier)
    else:
        if args.classifier:
            raise FmnistError("--classifier is a detector's second stage; this is not a detector run")
        evaluate(args.model, data=args.data, out=args.out, batch_size=args.batch_size, flip_tta=args.flip_tta)


def cmd_detect_anchors(args):
    from yolo.boxes import kmeans_anchors, wh_iou
    from yolo.dataset import annotation_box_sizes

    sizes = annotation_box_sizes(args.annotations, args.input_size)
    anchors = kmeans_anchors(sizes, k=args.k, seed=args.seed)
    fit = wh_iou(sizes, anchors).max(axis=1).mean()
    print(f"{len(sizes)} boxes at input {args.input_size}; mean best IoU with the anchors {fit:.3f}")
    print("anchors: " + " ".join(f"{w:.0f},{h:.0f}" for w, h in anchors))


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
    from fmnist_tf.realtime import FrameSource

    if args.classifier and args.mode != "detect":
        raise FmnistError("--classifier is the second stage of --mode detect")

    def open_model():
        if args.mode == "detect":
            from yolo.detector import open_detector

            return open_detector(args.model or newest_run("runs"), backend=args.backend, classifier=args.classifier)
        if args.mode == "cam":
            from fmnist_tf.cam import open_explainer

            return open_explainer(args.model or newest_run("runs"))
        return open_classifier(args.model or newest_run("runs"), backend=args.backend)

    stream_through_mode(FrameSource(video=args.video, camera=args.camera), args.mode, open_model, args,
                        args.min_probability)


def stream_through_mode(source, mode_name, open_model, args, min_probability):
    """The realtime loop for `realtime` and for `detect` on a video or webcam: one code path.
    The source is opened first, so a bad video fails before the (slow) model load."""
    from fmnist_tf.realtime import create_mode, run_realtime

    try:
        model = open_model()
        mode = create_mode(mode_name, model, min_probability=min_probability)
    except BaseException:
        source.close()
        raise
    print(f"{source.name}: {source.size[0]}x{source.size[1]} at {source.fps:.0f} fps; "
          f"model {model.source} ({model.backend})")
    report = run_realtime(source, mode, output=args.output, csv_path=args.save_csv,
                          show=False if args.no_show else None, max_frames=args.max_frames)
    print(report.summary())


def cmd_detect(args):
    from fmnist_tf.realtime import FrameSource
    from yolo.detector import VIDEO_SUFFIXES, detect_sources, open_detector

    def open_model():
        return open_detector(args.model, backend=args.backend, score_threshold=args.conf, iou_threshold=args.iou,
                             classifier=args.classifier)

    if args.source.isdigit() or Path(args.source).suffix.lower() in VIDEO_SUFFIXES:
        source = FrameSource(camera=int(args.source)) if args.source.isdigit() else FrameSource(video=args.source)
        stream_through_mode(source, "detect", open_model, args, args.conf)
        return
    out = Path(args.out or Path("runs") / "detect" / (Path(args.source).stem or "images"))
    results = detect_sources(open_model(), args.source, out, show=not args.no_show and args.show)
    print(results.summary())


def cmd_cam(args):
    from fmnist_tf.cam import explain_images

    for result in explain_images(args.model, args.images, args.out, threshold=args.threshold, layer=args.layer):
        box = result["box"]
        where = f"box {box[0]},{box[1]}-{box[2]},{box[3]}" if box else "no box (empty map)"
        print(f"{result['path']}: {result['class']} ({result['probability']:.2f}), {result['method']} on "
              f"{result['layer']}, {where}")
    print(f"saved <image>_cam.png and <image>_cam.json in {args.out}")


def cmd_embed(args):
    from fmnist_tf.embed import nearest_gallery_images

    results = nearest_gallery_images(args.model, args.images, args.gallery, top=args.top)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print(f"{result['path']}:")
        for rank, neighbour in enumerate(result["neighbours"], 1):
            label = f"  [{neighbour['label']}]" if neighbour["label"] else ""
            print(f"  {rank}. {neighbour['path']}  distance {neighbour['distance']:.3f}{label}")


def cmd_export(args):
    from fmnist_tf.export import export_model, format_export_report

    result = export_model(args.model, args.format, out=args.out, quantize=args.quantize, data=args.data)
    print(format_export_report(result))


def cmd_detect_data(args):
    from yolo.canvas import synthesize_fashion_mnist_canvases

    out = args.out or f"datasets/fmnist-{args.preset}"
    summary = synthesize_fashion_mnist_canvases(
        out, {"train": args.n_train, "val": args.n_val, "test": args.n_test}, preset=args.preset,
        seed=args.seed, data=args.data, max_items=args.max_items, canvas_size=args.canvas_size)
    boxes = ", ".join(f"{split} {summary['counts'][split]} canvases / {count} boxes"
                      for split, count in summary["boxes"].items())
    print(f"{out}: {boxes}; previews in {out}/previews; next: {PROG} train -c tinyyolov3 --data {out}")


def cmd_models(args):
    from fmnist_tf.config import available_configs
    from fmnist_tf.models import model_names

    print("models: " + ", ".join(model_names()))
    print("configs: " + ", ".join(available_configs()))


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "realtime": cmd_realtime,
            "export": cmd_export, "cam": cmd_cam, "embed": cmd_embed, "detect": cmd_detect, "detect-data": cmd_detect_data,
            "detect-anchors": cmd_detect_anchors, "models": cmd_models}


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
