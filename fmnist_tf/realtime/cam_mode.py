"""The realtime "cam" mode: classify every item like the classify mode, and show where the model looked.

Importing this module registers the mode (`create_mode("cam", explainer, min_probability=...)`);
`explainer` is a `fmnist_tf.cam.CamExplainer` (`fmnist_tf.cam.open_explainer(run)`: a Keras model,
since exported models have no gradients to read). Per frame: `preprocess` segments the items exactly
as the classify mode does (or takes the whole frame, for a model trained on an image folder); `infer`
runs ONE explainer call on all 28x28 crops (probabilities and maps), warps each map into its item's
box through the crop's geometry (`crop_affine`) and boxes it there; `draw`
blends the JET heat maps (0.3 heat / 0.5 frame), draws what the classify mode draws, then the CAM
boxes (yellow).

CSV: the classify mode's columns and meaning, unchanged (`CSV_FIELDS`: frame, item, class_id,
class, probability, x0, y0, x1, y1 with the ITEM box in frame pixels), so a cam-mode CSV reads like
a classify-mode one; the CAM box is drawn but not logged. Only numpy / OpenCV are imported here.
"""

from dataclasses import dataclass

import numpy as np

from fmnist_tf.cam.boxes import DEFAULT_THRESHOLD, cam_box, check_threshold, shift_box, warp_cam
from fmnist_tf.cam.render import BOX_COLOUR, blend_heat, draw_box
from fmnist_tf.errors import FmnistError
from fmnist_tf.realtime.modes import ClassifyMode, register_mode
from fmnist_tf.vision.segment import SegmentSettings


@dataclass(frozen=True)
class ItemExplanation:
    box: tuple            # the item, frame pixels (x1/y1 exclusive, as segment_items gives it)
    class_id: int
    name: str
    probability: float
    cam_box: tuple | None  # the CAM box, frame pixels; None for an all-zero map
    heat: np.ndarray      # the [0, 1] map laid on the item's box (box-sized)


@register_mode("cam")
class CamMode(ClassifyMode):
    """`explainer`: a CamExplainer. `min_probability` as in the classify mode; `threshold` the CAM
    box's fraction of the map's maximum."""

    def __init__(self, explainer, min_probability=0.5, threshold=DEFAULT_THRESHOLD, segment=SegmentSettings()):
        if not (hasattr(explainer, "method") and hasattr(explainer, "layer_name")):
            raise FmnistError("mode 'cam' needs a CAM explainer of a Keras model (a run directory or .keras "
                              f"file), not {getattr(explainer, 'source', explainer)!r}")
        self.threshold = check_threshold(threshold)
        super().__init__(explainer, min_probability, segment)

    def infer(self, segmentation):
        if not segmentation.boxes:
            return []
        probabilities, maps = self.classifier(segmentation.crops.astype(np.float32) / 255.0)
        names = self.classifier.class_names
        items = []
        for box, probs, cam in zip(segmentation.boxes, probabilities, maps):
            class_id = int(np.argmax(probs))
            x0, y0, x1, y1 = box
            heat = warp_cam(cam, self.crop_affine(box), (y1 - y0, x1 - x0))
            items.append(ItemExplanation(tuple(box), class_id, names[class_id], float(probs[class_id]),
                                         shift_box(cam_box(heat, self.threshold), x0, y0), heat))
        return items

    def draw(self, frame, items):
        for item in items:
            x0, y0, x1, y1 = item.box
            if frame.ndim == 3 and x1 > x0 and y1 > y0:
                frame[y0:y1, x0:x1] = blend_heat(frame[y0:y1, x0:x1], item.heat)
        super().draw(frame, items)
        for item in items:
            draw_box(frame, item.cam_box, BOX_COLOUR, 1)  # thin: the item box stays visible under it
