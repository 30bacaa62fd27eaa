"""TinyYoloV3 detector on synthesized Fashion-MNIST canvases (built in a later issue)."""
