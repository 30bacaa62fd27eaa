"""Class activation maps: the true CAM for `vgg_rescam`, Grad-CAM for every other classifier.

- `CamExplainer(model, layer=None, class_names=None, source=None)`: callable, images -> (probabilities, maps)
- `open_explainer(run_or_model, layer=None)`: one for a run directory or .keras file
- `cam_box(cam, threshold=0.2)`: the CAM paper's box (largest 8-connected component above 20 % of the max)
- `explain_images(run_or_model, image_paths, out_dir, threshold=0.2, layer=None)`: `fmnist-tf cam`
- `cam_grid(model, images, labels, path)`: the evaluate report's plots/cam_grid.png

TensorFlow loads only when an explainer is built.
"""

from fmnist_tf.cam.boxes import DEFAULT_THRESHOLD, cam_box, shift_box, warp_cam
from fmnist_tf.cam.explain import cam_grid, explain_images, read_display_image
from fmnist_tf.cam.explainer import CamExplainer, feature_layer, open_explainer
from fmnist_tf.cam.render import blend_heat, draw_box, heat_colours, save_cam_grid, side_by_side

__all__ = ["DEFAULT_THRESHOLD", "CamExplainer", "blend_heat", "cam_box", "cam_grid", "draw_box",
           "explain_images", "feature_layer", "heat_colours", "open_explainer",
           "read_display_image", "save_cam_grid", "shift_box", "side_by_side", "warp_cam"]
