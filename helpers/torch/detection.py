"""Object detection (chapter 18), PyTorch: a pretrained COCO detector for inference and a detector fine-tuned on
constructed scenes.

The COCO detector is the TF Object Detection API's SSD-MobileNetV2, converted to ONNX by tf2onnx (a registry
`Derived` entry, run in a subprocess, so TensorFlow never loads here) and run with ONNX Runtime. The fine-tuned
detector is the book's one-stage head on MobileNetV2 blocks 0-13 (stride 16), mirrored in `helpers.keras.detection`
with the same layers, initialisation, loss, batches and decoding (`helpers.detection`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from helpers import checks, registry, tuning
from helpers import detection as neutral
from helpers.torch.models import Model, blocks, device, pretrained_backbone

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
    """The COCO SSD-MobileNetV2 (90 COCO ids) as ONNX in ONNX Runtime: a function from one uint8 image batch
    (1, H, W, 3) to NumPy (boxes, scores, classes, num_detections) as the TF graph returns them."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(registry.fetch("ssd-mobilenet-v2-coco-onnx")), providers=["CPUExecutionProvider"]
    )
    names = ["detection_boxes:0", "detection_scores:0", "detection_classes:0", "num_detections:0"]

    def run(images: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(session.run(names, {"image_tensor:0": np.ascontiguousarray(images, dtype=np.uint8)}))

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


class _Detector(nn.Module):
    """MobileNetV2 blocks 0-13 and a one-stage head: NCHW images in, NHWC maps (N, G, G, classes + 4) out."""

    def __init__(self, features: nn.Module, num_classes: int):
        super().__init__()
        self.features = features
        self.head = nn.Sequential(
            nn.Conv2d(96, HEAD_WIDTH, 3, padding=1), nn.ReLU(), nn.Conv2d(HEAD_WIDTH, num_classes + 4, 1)
        )
        for conv in (self.head[0], self.head[2]):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.head[2].bias[:num_classes], -float(np.log((1 - neutral.PRIOR) / neutral.PRIOR)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)).permute(0, 2, 3, 1)


def _frozen(batchnorm: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    """torchvision's FrozenBatchNorm2d with the layer's statistics, scale and shift: buffers, never trained."""
    frozen = FrozenBatchNorm2d(batchnorm.num_features, eps=batchnorm.eps)
    frozen.load_state_dict(batchnorm.state_dict())  # it drops num_batches_tracked itself
    return frozen


def _renormalise(features: nn.Module, norm: str) -> nn.Module:
    """Replace every BatchNorm2d of `features` by a frozen copy ('frozen') or by GroupNorm ('group')."""
    for module in list(features.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d) and norm != "batch":
                new = _frozen(child) if norm == "frozen" else nn.GroupNorm(neutral.GROUPS, child.num_features)
                setattr(module, name, new)
    return features


def detection_model(num_classes, weights="imagenet", norm=None) -> Model:
    """The book's one-stage detector: MobileNetV2 blocks 0-13 (ImageNet weights, or None for random ones) and a
    head (3x3 conv, ReLU, 1x1 conv) giving per cell `num_classes` class logits and 4 box numbers. `norm` (see
    `detection.check_norm`): 'frozen' BatchNorm (the default with ImageNet weights), 'batch' or 'group' (the
    default with random weights)."""
    num_classes = checks.count("num_classes", num_classes)
    norm = neutral.check_norm(weights, norm)
    features = nn.Sequential(*blocks(pretrained_backbone("mobilenet_v2", weights=weights))[:FEATURE_BLOCKS])
    return _Detector(_renormalise(features, norm), num_classes)


def detection_loss(outputs, targets):
    """Sigmoid focal loss over every cell and class plus the L1 loss of the 4 box numbers at object centres, both
    divided by the number of objects in the batch; targets from `detection.encode_targets` (N, G, G, classes + 5)."""
    num_classes = targets.shape[-1] - 5
    logits, boxes = outputs[..., :num_classes], outputs[..., num_classes:]
    truth, true_boxes, centres = targets[..., :num_classes], targets[..., num_classes:-1], targets[..., -1]
    p = torch.sigmoid(logits)
    ce = nn.functional.binary_cross_entropy_with_logits(logits, truth, reduction="none")
    p_t = truth * p + (1 - truth) * (1 - p)
    alpha_t = truth * FOCAL_ALPHA + (1 - truth) * (1 - FOCAL_ALPHA)
    focal = (alpha_t * (1 - p_t) ** FOCAL_GAMMA * ce).sum()
    box = (centres[..., None] * (boxes - true_boxes).abs()).sum()
    return (focal + box) / centres.sum().clamp(min=1.0)


def _nchw(x: np.ndarray, dev) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2).to(dev)


def train_detector(model, images, boxes, labels, steps=100, batch_size=16, lr=1e-3, seed=0) -> list[float]:
    """Train every parameter of the detector with Adam on normalised scenes (N, S, S, 3) and their boxes and labels
    (lists, one array per scene; checked by `detection.check_boxes`) for `steps` batches drawn by
    `detection.batch_indices`; returns the loss of every step."""
    steps, batch_size = checks.count("steps", steps), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    images = checks.inputs(images, (None, None, 3))
    if len(boxes) != len(images):
        raise ValueError(f"one box array per image: {len(images)} images, {len(boxes)} box arrays")
    num_classes = model.head[2].out_channels - 4
    targets = neutral.encode_targets(boxes, labels, images.shape[1], num_classes)
    dev = torch.device(device())
    model.to(dev).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=tuning.ADAM_EPSILON)
    losses = []
    for batch in neutral.batch_indices(len(images), steps, batch_size, seed):
        loss = detection_loss(model(_nchw(images[batch], dev)), torch.from_numpy(targets[batch]).to(dev))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def predict_maps(model, images, batch_size=32) -> np.ndarray:
    """The detector's raw output maps (N, G, G, classes + 4) for normalised scenes, in eval mode, as NumPy."""
    images = checks.inputs(images, (None, None, 3))
    dev = torch.device(device())
    model.to(dev).eval()
    with torch.inference_mode():
        maps = [model(_nchw(images[i : i + batch_size], dev)).cpu().numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(maps)


def detect(model, images, min_score=0.05) -> list[dict]:
    """Detections on normalised scenes: `predict_maps` then `detection.decode` (peaks of the class scores)."""
    maps = predict_maps(model, images)
    return neutral.decode(maps, np.asarray(images).shape[1], min_score)
