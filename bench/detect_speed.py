"""Detection frames per second on a 640x480 video through the realtime loop, against model.predict per frame.

    python bench/detect_speed.py RUN_DIR [--canvases datasets/bench-multi]

The video is made of the detect-data test canvases (640x480). Paths, in alternating rounds:
  ours            `realtime --mode detect`: LiteRT converted in memory, letterbox in the worker thread
  ours-tf.function  the same loop with the Keras model as a compiled tf.function
  predict-loop    the plain way: read, letterbox, model.predict, decode + NMS, one frame after another
  ours+classifier `--classifier RUN`: "ours" with that second-stage classifier (also LiteRT)
Writes bench/results/detect_speed.json.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import alternating_rounds, describe_machine  # noqa: E402

from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.modelio import load_model  # noqa: E402
from fmnist_tf.realtime import FrameSource, create_mode, run_realtime  # noqa: E402
from yolo.detector import open_detector  # noqa: E402


def write_canvas_video(folder, path, limit):
    frames = sorted(Path(folder).glob("*.jpg"))[:limit]
    first = cv2.imread(str(frames[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (first.shape[1], first.shape[0]))
    for frame in frames:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    return len(frames), first.shape[1], first.shape[0]


def predict_per_frame_fps(video, detector, model, frames):
    capture = cv2.VideoCapture(str(video))
    start = time.perf_counter()
    for _ in range(frames):
        ok, frame = capture.read()
        prepared = detector.prepare(frame)
        heads = model.predict(prepared.image[None], verbose=0)
        detector.decoder(heads, [frame.shape[:2]], detector.score_threshold, detector.iou_threshold)
    return frames / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="detector run directory or .keras")
    parser.add_argument("--canvases", default="datasets/bench-multi", help="detect-data folder (its test images)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default="bench/results/detect_speed.json")
    parser.add_argument("--classifier", metavar="RUN_OR_MODEL", help="also time the loop with this second stage")
    args = parser.parse_args()
    litert, function = open_detector(args.model), open_detector(args.model, backend="keras")
    keras_model = load_model(args.model)
    stage_ms = {}
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "canvases.mp4"
        frames, width, height = write_canvas_video(Path(args.canvases) / "images" / "test", video, args.frames)

        def run(name, detector):
            report = run_realtime(FrameSource(video), create_mode("detect", detector, min_probability=0.3), show=False)
            stage_ms.setdefault(name, report.stage_ms())
            return report.fps

        paths = {"ours": lambda: run("ours", litert), "ours-tf.function": lambda: run("ours-tf.function", function),
                 "predict-loop": lambda: predict_per_frame_fps(video, litert, keras_model, min(frames, 60))}
        if args.classifier:
            second = open_detector(args.model, classifier=args.classifier)
            paths["ours+classifier"] = lambda: run("ours+classifier", second)
        fps, median = alternating_rounds(paths, args.rounds, unit=" fps")
    median = {path: round(value, 1) for path, value in median.items()}
    settings = json.loads((Path(args.model) / "detector.json").read_text()) if Path(args.model).is_dir() else {}
    result = {
        "model": args.model, "input_size": settings.get("input_size"), "video": f"{frames} frames, {width}x{height}",
        "rounds": args.rounds, "fps": median, "all_rounds": fps,
        "ratio_ours_vs_predict_loop": round(median["ours"] / median["predict-loop"], 1),
        "stage_ms_per_frame_first_round": {k: {s: round(v, 3) for s, v in ms.items()} for k, ms in stage_ms.items()},
        "machine": describe_machine(),
    }
    atomic_write_json(args.results, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
