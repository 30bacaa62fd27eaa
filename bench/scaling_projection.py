"""A projection, not a measurement: vgg_rescam data-parallel training on 1, 8 and 64 GPUs.

    python bench/scaling_projection.py                  # writes bench/results/scaling_projection.json

Measured here (from the model itself): training FLOPs per image (3x the analytic forward count) and
the parameter count, hence the gradient bytes every step must all-reduce. Assumed (stated in the
output, change them with flags): the GPU's achieved training throughput, the all-reduce bandwidths,
how much communication overlaps the backward pass, the per-epoch fixed cost, and how many more
epochs a large global batch needs. Step time = max(compute, exposed communication), where the ring
all-reduce moves 2 (N - 1) / N x gradient bytes per GPU: over NVLink inside a node, and for 64 GPUs
(8 nodes of 8) hierarchically, the inter-node leg carrying 1/8 of the gradient per GPU.
"""

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from fmnist_tf.config import load_config  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.models import create_model  # noqa: E402
from fmnist_tf.models.flops import training_flops  # noqa: E402

TRAIN_IMAGES = 54_000


def ring_seconds(gradient_bytes, gpus, bandwidth):
    return 2 * (gpus - 1) / gpus * gradient_bytes / bandwidth if gpus > 1 else 0.0


def project(gpus, flops_per_image, gradient_bytes, args, epochs):
    per_gpu_batch = args.per_gpu_batch
    global_batch = gpus * per_gpu_batch
    compute = per_gpu_batch * flops_per_image / (args.achieved_tflops * 1e12)
    if gpus <= 8:
        communication = ring_seconds(gradient_bytes, gpus, args.nvlink_gbps * 1e9)
    else:  # reduce-scatter inside the node, ring across nodes on 1/8 of the bytes, all-gather inside
        communication = (ring_seconds(gradient_bytes, 8, args.nvlink_gbps * 1e9)
                         + ring_seconds(gradient_bytes / 8, gpus // 8, args.network_gbps * 1e9))
    exposed = max(0.0, communication - args.overlap * (2 / 3) * compute)  # backward is 2/3 of a step
    step = compute + exposed
    steps_per_epoch = math.ceil(TRAIN_IMAGES / global_batch)
    epochs_needed = epochs * (args.large_batch_epoch_factor if global_batch > args.large_batch else 1)
    time_to_accuracy = epochs_needed * (steps_per_epoch * step + args.epoch_overhead_s)
    return {"gpus": gpus, "global_batch": global_batch, "step_compute_ms": round(compute * 1e3, 2),
            "step_communication_ms": round(communication * 1e3, 2), "step_ms": round(step * 1e3, 2),
            "images_per_second": round(global_batch / step), "scaling_efficiency": None,
            "steps_per_epoch": steps_per_epoch, "epochs": epochs_needed,
            "time_to_accuracy_s": round(time_to_accuracy, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--achieved-tflops", type=float, default=100.0,
                        help="training TFLOP/s one GPU sustains on this model (H100: ~10%% of its bf16 peak, "
                             "small 28-px maps)")
    parser.add_argument("--per-gpu-batch", type=int, default=128)
    parser.add_argument("--nvlink-gbps", type=float, default=350.0, help="NCCL bus bandwidth inside a node, GB/s")
    parser.add_argument("--network-gbps", type=float, default=45.0, help="per-GPU bandwidth across nodes, GB/s "
                                                                        "(400 Gb/s InfiniBand per GPU)")
    parser.add_argument("--overlap", type=float, default=0.8, help="fraction of the backward pass that hides "
                                                                  "communication")
    parser.add_argument("--epoch-overhead-s", type=float, default=1.5,
                        help="validation, checkpoints (a 536 MB model) and pipeline start per epoch")
    parser.add_argument("--large-batch", type=int, default=2048, help="global batch above which more epochs are needed")
    parser.add_argument("--large-batch-epoch-factor", type=float, default=2.0)
    parser.add_argument("--results", default="bench/results/scaling_projection.json")
    args = parser.parse_args()

    config = load_config("vgg_rescam")
    model = create_model("vgg_rescam", width=config.width, dropout=config.dropout)
    flops_per_image = training_flops(model)
    parameters = model.count_params()
    gradient_bytes = 4 * parameters  # float32 gradients (mixed precision keeps float32 master weights)
    rows = [project(gpus, flops_per_image, gradient_bytes, args, config.epochs) for gpus in (1, 8, 64)]
    for row in rows:
        row["scaling_efficiency"] = round(row["images_per_second"] / (rows[0]["images_per_second"] * row["gpus"]), 3)
    result = {"model": "vgg_rescam", "width": config.width, "parameters": parameters,
              "training_gflops_per_image": round(flops_per_image / 1e9, 3),
              "gradient_megabytes_per_step": round(gradient_bytes / 1e6, 1), "reference_epochs": config.epochs,
              "assumptions": {k: v for k, v in vars(args).items() if k != "results"},
              "projection": rows, "measured_on": describe_machine()}
    atomic_write_json(Path(args.results), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
