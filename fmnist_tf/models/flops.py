"""Analytic FLOP count (multiply and add counted separately) of a model's convolutions and dense layers."""

import math

import keras


def forward_flops(model) -> int:
    """FLOPs of one image's forward pass through Conv2D and Dense layers (the >99% that matters)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            out_h, out_w = layer.output.shape[1:3]
            in_channels = layer.input.shape[-1] // layer.groups
            total += 2 * out_h * out_w * math.prod(layer.kernel_size) * in_channels * layer.filters
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def training_flops(model) -> int:
    """Forward plus backward (gradients for inputs and weights): the usual 3x the forward pass."""
    return 3 * forward_flops(model)
