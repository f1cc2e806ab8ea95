"""Object detection (chapter 18), Keras: a pretrained COCO detector for inference and a detector fine-tuned on
constructed scenes.

The COCO detector is the TF Object Detection API's SSD-MobileNetV2 frozen graph, loaded with
`tf.compat.v1.GraphDef`, wrapped with `tf.compat.v1.wrap_function` and pruned to its inputs and outputs. The
fine-tuned detector is the book's one-stage head on the ported MobileNetV2 blocks 0-13 (stride 16), mirrored in
`helpers.torch.detection` with the same layers, initialisation, loss, batches and decoding (`helpers.detection`).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from helpers import checks, config, registry, tuning
from helpers import detection as neutral
from helpers.keras.models import Model, blocks, pretrained_backbone

__all__ = [
    "coco_detector",
    "detect_coco",
    "detection_model",
    "detection_loss",
    "train_detector",
    "predict_maps",
    "detect",
]

FEATURE_BLOCKS, HEAD_WIDTH = neutral.FEATURE_BLOCKS, neutral.HEAD_WIDTH  # one architecture for both frameworks
FOCAL_ALPHA, FOCAL_GAMMA = neutral.FOCAL_ALPHA, neutral.FOCAL_GAMMA


def coco_detector() -> Callable:
    """The COCO SSD-MobileNetV2 (90 COCO ids) as the TF frozen graph, pruned: a function from one uint8 image batch
    (1, H, W, 3) to NumPy (boxes, scores, classes, num_detections)."""
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(registry.fetch("ssd-mobilenet-v2-coco").read_bytes())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    names = ["detection_boxes:0", "detection_scores:0", "detection_classes:0", "num_detections:0"]
    graph = wrapped.graph
    pruned = wrapped.prune(graph.get_tensor_by_name("image_tensor:0"), [graph.get_tensor_by_name(n) for n in names])

    def run(images: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(t.numpy() for t in pruned(tf.constant(np.asarray(images, dtype=np.uint8))))

    return run


def detect_coco(detector, images, min_score=0.5) -> list[dict]:
    """Run the COCO detector on uint8 RGB images (a list or an array of (H, W, 3)), one at a time; per image
    {"boxes" (K, 4) pixels (x0, y0, x1, y1), "scores", "labels" (COCO ids), "names"} with score >= min_score."""
    found = []
    for image in images:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"the COCO detector takes uint8 RGB images (H, W, 3), got {image.dtype} {image.shape}")
        boxes, scores, classes, num = detector(image[None])
        k = int(num[0])
        found.append(neutral.coco_results(boxes[0, :k], scores[0, :k], classes[0, :k], *image.shape[:2], min_score))
    return found


class _Detector(keras.Model):
    """The book's detector as a Keras model that `fit` trains: `compute_loss` is `detection_loss`."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return detection_loss(y_pred, y)


class _GroupNorm(keras.layers.GroupNormalization):
    """GroupNorm that takes (and ignores) the `mask` argument with which the graph calls the BatchNorm it replaces."""

    def call(self, inputs, mask=None):
        return super().call(inputs)


def _renormalise(block: keras.Model, norm: str) -> keras.Model:
    """Freeze every BatchNorm of `block` ('frozen': inference mode, statistics, scale and shift fixed), or rebuild
    the block with GroupNorm in their place ('group', fresh weights); 'batch' leaves it as it is."""
    if norm == "frozen":
        for layer in block.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    if norm != "group":
        return block

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return _GroupNorm(neutral.GROUPS, epsilon=1e-5, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(block, clone_function=clone)


def detection_model(num_classes, weights="imagenet", norm=None) -> Model:
    """The book's one-stage detector: MobileNetV2 blocks 0-13 (ImageNet weights, or None for random ones) and a
    head (3x3 conv, ReLU, 1x1 conv) giving per cell `num_classes` class logits and 4 box numbers. `norm` (see
    `detection.check_norm`): 'frozen' BatchNorm (the default with ImageNet weights), 'batch' or 'group' (the
    default with random weights)."""
    num_classes = checks.count("num_classes", num_classes)
    norm = neutral.check_norm(weights, norm)
    images = keras.Input((None, None, 3), name="images")
    x = images
    for block in blocks(pretrained_backbone("mobilenet_v2", weights=weights))[:FEATURE_BLOCKS]:
        x = _renormalise(block, norm)(x)
    init = {"kernel_initializer": keras.initializers.RandomNormal(stddev=0.01), "bias_initializer": "zeros"}
    x = keras.layers.Conv2D(HEAD_WIDTH, 3, padding="same", activation="relu", name="head_0", **init)(x)
    prior = -float(np.log((1 - neutral.PRIOR) / neutral.PRIOR))
    bias = keras.initializers.Constant([prior] * num_classes + [0.0] * 4)
    outputs = keras.layers.Conv2D(
        num_classes + 4, 1, name="head_2", kernel_initializer=init["kernel_initializer"], bias_initializer=bias
    )(x)
    return _Detector(images, outputs, name="detector")


def detection_loss(outputs, targets):
    """Sigmoid focal loss over every cell and class plus the L1 loss of the 4 box numbers at object centres, both
    divided by the number of objects in the batch; targets from `detection.encode_targets` (N, G, G, classes + 5)."""
    num_classes = targets.shape[-1] - 5
    logits, boxes = outputs[..., :num_classes], outputs[..., num_classes:]
    truth, true_boxes, centres = targets[..., :num_classes], targets[..., num_classes:-1], targets[..., -1]
    p = ops.sigmoid(logits)
    ce = ops.maximum(logits, 0) - logits * truth + ops.log1p(ops.exp(-ops.abs(logits)))  # stable BCE with logits
    p_t = truth * p + (1 - truth) * (1 - p)
    alpha_t = truth * FOCAL_ALPHA + (1 - truth) * (1 - FOCAL_ALPHA)
    focal = ops.sum(alpha_t * (1 - p_t) ** FOCAL_GAMMA * ce)
    box = ops.sum(centres[..., None] * ops.abs(boxes - true_boxes))
    return (focal + box) / ops.maximum(ops.sum(centres), 1.0)


class _StepLosses(keras.callbacks.Callback):
    """The loss of every training step. `fit` logs the running mean of the epoch's losses, so the k-th step's own
    loss is k * mean_k - (k - 1) * mean_(k-1)."""

    def on_train_begin(self, logs=None):
        self.losses, self._total = [], 0.0

    def on_train_batch_end(self, batch, logs=None):
        total = (batch + 1) * float(logs["loss"])
        self.losses.append(total - self._total)
        self._total = total


def train_detector(model, images, boxes, labels, steps=100, batch_size=16, lr=1e-3, seed=0) -> list[float]:
    """Train every trainable weight of the detector with Adam, by `compile` and `fit`, on normalised scenes
    (N, S, S, 3) and their boxes and labels (lists, one array per scene; checked by `detection.check_boxes`) for
    `steps` batches drawn by `detection.batch_indices`; returns the loss of every step."""
    steps, batch_size = checks.count("steps", steps), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    images = checks.inputs(images, (None, None, 3))
    if len(boxes) != len(images):
        raise ValueError(f"one box array per image: {len(images)} images, {len(boxes)} box arrays")
    num_classes = model.get_layer("head_2").filters - 4
    targets = neutral.encode_targets(boxes, labels, images.shape[1], num_classes)
    images, targets = tf.constant(images), tf.constant(targets)
    batches = tf.data.Dataset.from_tensor_slices(np.stack(neutral.batch_indices(len(images), steps, batch_size, seed)))
    batches = batches.map(lambda batch: (tf.gather(images, batch), tf.gather(targets, batch)))
    optimizer = keras.optimizers.Adam(learning_rate=lr, epsilon=tuning.ADAM_EPSILON)
    model.compile(optimizer=optimizer, run_eagerly=config.profile().keras_eager, jit_compile=False)
    recorder = _StepLosses()
    model.fit(batches, epochs=1, verbose=0, callbacks=[recorder], shuffle=False)
    return recorder.losses


def predict_maps(model, images, batch_size=32) -> np.ndarray:
    """The detector's raw output maps (N, G, G, classes + 4) for normalised scenes, in inference mode, as NumPy."""
    images = checks.inputs(images, (None, None, 3))
    maps = [np.asarray(model(images[i : i + batch_size], training=False)) for i in range(0, len(images), batch_size)]
    return np.concatenate(maps)


def detect(model, images, min_score=0.05) -> list[dict]:
    """Detections on normalised scenes: `predict_maps` then `detection.decode` (peaks of the class scores)."""
    maps = predict_maps(model, images)
    return neutral.decode(maps, np.asarray(images).shape[1], min_score)
