"""Object detection (chapter 18), framework-neutral: constructed scenes with exact boxes, box checks, the target
encoding and decoding of the book's one-stage detector, COCO-style mAP (pycocotools), COCO class names, drawing.

Framework-neutral: imports neither PyTorch nor TensorFlow. Boxes are (x0, y0, x1, y1) in pixels, x1 and y1
exclusive (the box of pixel columns 3..5 is x0=3, x1=6), as float32 arrays of shape (K, 4); labels are int64 class
ids 0..num_classes-1. The detector fine-tuned in the chapter predicts, on a grid of cells `STRIDE` pixels apart,
one score per class and four box numbers per cell (an anchor-free, CenterNet-like one-stage head).
"""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np

from helpers import data

__all__ = [
    "STRIDE",
    "SCENE_CLASSES",
    "COCO_CLASSES",
    "NORMS",
    "check_norm",
    "check_boxes",
    "make_scenes",
    "scene_input",
    "encode_targets",
    "decode",
    "batch_indices",
    "coco_results",
    "coco_map",
    "draw_detections",
]

STRIDE = 16  # pixels between two cells of the detector's output grid (MobileNetV2 up to block 13)
FEATURE_BLOCKS = 14  # MobileNetV2 blocks 0-13: stride 16, 96 channels (both frameworks' detectors)
HEAD_WIDTH = 64  # channels of the head's 3x3 convolution
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # RetinaNet's focal loss settings
PRIOR = 0.01  # the class scores start near this probability (RetinaNet's prior: few cells hold an object)
GROUPS = 8  # GroupNorm groups in a backbone trained from scratch (every MobileNetV2 width is a multiple of 8)

# How the backbone normalises: BatchNorm frozen at the stored statistics (and its scale and shift fixed), BatchNorm
# from the statistics of each training batch, or GroupNorm (Wu & He 2018), which needs no batch statistics
NORMS = ("frozen", "batch", "group")

# The constructed task: items of these classes pasted onto photo crops; (data set, label in that data set)
SCENE_CLASSES = {
    "trouser": ("fashion", 1),
    "sneaker": ("fashion", 7),
    "bag": ("fashion", 8),
    "digit 7": ("mnist", 7),
}

# COCO category ids (1..90 with gaps, as the TF Object Detection API numbers them) and names
_COCO_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant - stop_sign parking_meter "
    "bench bird cat dog horse sheep cow elephant bear zebra giraffe - backpack umbrella - - handbag tie suitcase "
    "frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle - "
    "wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake chair "
    "couch potted_plant bed - dining_table - - toilet - tv laptop mouse remote keyboard cell_phone microwave oven "
    "toaster sink refrigerator - book clock vase scissors teddy_bear hair_drier toothbrush"
).split()
COCO_CLASSES = {i + 1: name.replace("_", " ") for i, name in enumerate(_COCO_NAMES) if name != "-"}


# ----------------------------------------------------------------------------- checks


def check_norm(weights, norm) -> str:
    """The backbone's normalisation: `norm` if it is one of NORMS and fits the weights, else one ValueError; None
    means 'frozen' for ImageNet weights (what detection libraries do) and 'group' for random ones (He et al. 2019)."""
    if norm is None:
        return "frozen" if weights else "group"
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} or None, got {norm!r}")
    if norm == "frozen" and not weights:
        raise ValueError("norm='frozen' keeps learned BatchNorm statistics; a random backbone has none (use 'batch')")
    return norm


def check_boxes(boxes, labels, image_size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (K, 4) as (x0, y0, x1, y1) pixels inside a square image of side `image_size`, each with a positive
    width and height, and labels (K,) in 0..num_classes-1; returned as float32 and int64. One ValueError each."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4), np.float32)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(boxes):
        raise ValueError(f"one label per box: got {len(boxes)} boxes and {len(labels)} labels")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes contain NaN or infinite values")
    sizes = boxes[:, 2:] - boxes[:, :2]
    if (sizes <= 0).any():
        bad = boxes[(sizes <= 0).any(1)][0].tolist()
        raise ValueError(
            f"box {bad} has a negative or zero width or height: boxes are (x0, y0, x1, y1) with x1 > x0 and y1 > y0 "
            "(corners, not (x, y, width, height); convert with x1 = x + width, y1 = y + height)"
        )
    if (boxes < 0).any() or (boxes > image_size).any():
        bad = boxes[((boxes < 0) | (boxes > image_size)).any(1)][0].tolist()
        raise ValueError(
            f"box {bad} lies outside the {image_size}x{image_size} image: coordinates must be pixels in "
            f"0..{image_size} (clip the box to the image, or scale normalised boxes by the image size)"
        )
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be integer class ids in 0..{num_classes - 1} (the class list has {num_classes} classes), "
            f"got {labels.tolist()}"
        )
    return boxes, labels.astype(np.int64)


# ----------------------------------------------------------------------------- constructed scenes


@functools.lru_cache(maxsize=4)
def _items(split: str, classes: tuple[str, ...]) -> list[np.ndarray]:
    """For each scene class, its 28x28 uint8 item images from the data set's `split`."""
    found = []
    for name in classes:
        dataset, label = SCENE_CLASSES[name]
        train_x, train_y, test_x, test_y = data.dataset_splits(dataset, seed=0)
        images, labels = (train_x, train_y) if split == "train" else (test_x, test_y)
        found.append(images[labels == label])
    return found


@functools.lru_cache(maxsize=1)
def _photos() -> list[np.ndarray]:
    return [data.load_photo(name) for name in data.PHOTOS]


def _background(rng, photos: list[np.ndarray], size: int) -> np.ndarray:
    """A random square crop (30-80% of the short side) of a random photo, resized to size x size."""
    photo = photos[rng.integers(len(photos))]
    side = int(min(photo.shape[:2]) * rng.uniform(0.3, 0.8))
    top = rng.integers(photo.shape[0] - side + 1)
    left = rng.integers(photo.shape[1] - side + 1)
    return data.resize(photo[None, top : top + side, left : left + side], size)[0]


def _item_alpha(item: np.ndarray, side: int) -> np.ndarray:
    """The item cropped to its ink, resized so its longer side is `side`; an opacity map in [0, 1] whose nonzero
    pixels span the whole map (faint resampling fringes below 0.1 are dropped, so the box is exact)."""
    rows, cols = np.flatnonzero(item.max(1) > 0), np.flatnonzero(item.max(0) > 0)
    item = item[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = side / max(item.shape)
    height, width = max(2, round(item.shape[0] * scale)), max(2, round(item.shape[1] * scale))
    alpha = _resize_to(item, height, width)
    alpha = np.where(alpha >= 0.1, alpha, 0.0)
    rows, cols = np.flatnonzero(alpha.max(1) > 0), np.flatnonzero(alpha.max(0) > 0)
    return alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _resize_to(item: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(item).resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0


def _overlaps(box, boxes, gap: int) -> bool:
    return any(
        box[0] < b[2] + gap and b[0] < box[2] + gap and box[1] < b[3] + gap and b[1] < box[3] + gap for b in boxes
    )


def make_scenes(
    num_scenes: int,
    size: int = 128,
    classes: tuple[str, ...] = tuple(SCENE_CLASSES),
    split: str = "train",
    seed: int = 0,
    max_objects: int = 3,
) -> dict:
    """`num_scenes` square scenes: real Fashion-MNIST/MNIST items (of `classes`, from the data set's `split`)
    pasted, in a random colour and at a random size (a fifth to a third of the scene), without overlap, onto random
    crops of the scikit-image photos. Returns {"images": (N, size, size, 3) uint8, "boxes": list of (K, 4) float32,
    "labels": list of (K,) int64, "classes": the class names}; the boxes are exact: the pasted item's extent."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    unknown = [c for c in classes if c not in SCENE_CLASSES]
    if unknown or not classes:
        raise ValueError(f"unknown scene classes {unknown}; known: {', '.join(SCENE_CLASSES)}")
    if size < 48:
        raise ValueError(f"size must be at least 48 pixels, got {size}")
    rng = np.random.default_rng(seed)
    items = _items(split, tuple(classes))
    photos = _photos()
    images, all_boxes, all_labels = [], [], []
    for _ in range(num_scenes):
        scene = _background(rng, photos, size).astype(np.float32)
        boxes, labels = [], []
        for _ in range(rng.integers(1, max_objects + 1)):
            label = int(rng.integers(len(classes)))
            alpha = _item_alpha(items[label][rng.integers(len(items[label]))], int(rng.integers(size // 5, size // 3)))
            height, width = alpha.shape
            for _ in range(50):  # a free place, not touching the items already there
                x0, y0 = int(rng.integers(size - width + 1)), int(rng.integers(size - height + 1))
                box = (x0, y0, x0 + width, y0 + height)
                if not _overlaps(box, boxes, gap=2):
                    break
            else:
                continue
            colour = rng.uniform(0, 255, 3)
            colour[rng.integers(3)] = 255.0  # one channel at full strength: bright enough to stand out
            region = scene[y0 : y0 + height, x0 : x0 + width]
            region[:] = (1 - alpha[..., None]) * region + alpha[..., None] * colour
            boxes.append(box)
            labels.append(label)
        images.append(np.clip(np.round(scene), 0, 255).astype(np.uint8))
        all_boxes.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        all_labels.append(np.asarray(labels, dtype=np.int64))
    return {"images": np.stack(images), "boxes": all_boxes, "labels": all_labels, "classes": tuple(classes)}


def scene_input(images: np.ndarray) -> np.ndarray:
    """Network input of uint8 scenes (N, H, W, 3): scaled to [0, 1] and ImageNet-normalised, float32, same size."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"scene_input expects uint8 RGB images (N, H, W, 3), got {images.dtype} {images.shape}")
    return ((images.astype(np.float32) / 255.0 - data.IMAGENET_MEAN) / data.IMAGENET_STD).astype(np.float32)


# ----------------------------------------------------------------------------- the one-stage detector's targets


def encode_targets(boxes: list, labels: list, image_size: int, num_classes: int) -> np.ndarray:
    """Training targets (N, G, G, num_classes + 5) for a grid of G = image_size // STRIDE cells: per cell, a one-hot
    class vector where an object's centre falls (else zeros), the box as (dx, dy, log(w / STRIDE), log(h / STRIDE))
    with (dx, dy) the centre's offset inside its cell, and a last channel 1 where an object's centre falls."""
    if len(boxes) != len(labels):
        raise ValueError(f"one box array and one label array per image: got {len(boxes)} and {len(labels)}")
    if image_size % STRIDE:
        raise ValueError(f"image_size must be a multiple of {STRIDE} (the detector's stride), got {image_size}")
    grid = image_size // STRIDE
    targets = np.zeros((len(boxes), grid, grid, num_classes + 5), dtype=np.float32)
    for n, (image_boxes, image_labels) in enumerate(zip(boxes, labels)):
        image_boxes, image_labels = check_boxes(image_boxes, image_labels, image_size, num_classes)
        for (x0, y0, x1, y1), label in zip(image_boxes, image_labels):
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            gx, gy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            targets[n, gy, gx, :num_classes] = 0.0
            targets[n, gy, gx, label] = 1.0
            box = (cx - gx, cy - gy, np.log((x1 - x0) / STRIDE), np.log((y1 - y0) / STRIDE))
            targets[n, gy, gx, num_classes : num_classes + 4] = box
            targets[n, gy, gx, -1] = 1.0
    return targets


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def decode(
    maps: np.ndarray, image_size: int, min_score: float = 0.05, max_detections: int = 100, peaks: bool = True
) -> list[dict]:
    """Detections from the detector's output maps (N, G, G, num_classes + 4): for each image, the cells whose class
    score is at least `min_score` and (with `peaks`) the largest of its 3x3 neighbourhood (a peak filter in place of
    non-maximum suppression), at most `max_detections`, as {"boxes" (K, 4) pixels, "scores" (K,), "labels" (K,)}.
    With peaks=False every cell above `min_score` is kept, duplicates included: input for non-maximum suppression."""
    maps = np.asarray(maps, dtype=np.float32)
    num_classes = maps.shape[-1] - 4
    scores = _sigmoid(maps[..., :num_classes])
    padded = np.pad(scores, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-1.0)
    grid_h, grid_w = scores.shape[1:3]
    neighbours = np.stack([padded[:, i : i + grid_h, j : j + grid_w] for i in range(3) for j in range(3)])
    kept = (scores >= neighbours.max(0)) & (scores >= min_score) if peaks else scores >= min_score
    found = []
    for n in range(len(maps)):
        gy, gx, label = np.nonzero(kept[n])
        order = np.argsort(-scores[n, gy, gx, label], kind="stable")[:max_detections]
        gy, gx, label = gy[order], gx[order], label[order]
        dx, dy, lw, lh = np.moveaxis(maps[n, gy, gx, num_classes:], -1, 0)
        cx, cy = (gx + dx) * STRIDE, (gy + dy) * STRIDE
        w, h = np.exp(np.clip(lw, -8, 8)) * STRIDE, np.exp(np.clip(lh, -8, 8)) * STRIDE
        boxes = np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), 0, image_size)
        found.append(
            {"boxes": boxes.astype(np.float32), "scores": scores[n, gy, gx, label], "labels": label.astype(np.int64)}
        )
    return found


def batch_indices(num_examples: int, steps: int, batch_size: int, seed: int = 0) -> list[np.ndarray]:
    """The examples of each of `steps` training batches: seeded shuffled passes over the data, one after another
    (the same batches in both frameworks for the same seed)."""
    rng = np.random.default_rng(seed)
    stream, batches = np.zeros(0, dtype=np.int64), []
    batch_size = min(batch_size, num_examples)
    for _ in range(steps):
        while len(stream) < batch_size:
            stream = np.concatenate([stream, rng.permutation(num_examples)])
        batches.append(stream[:batch_size])
        stream = stream[batch_size:]
    return batches


# ----------------------------------------------------------------------------- the COCO detector's outputs


def coco_results(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, height: int, width: int, min_score: float = 0.5
) -> dict:
    """One image's outputs of the TF Object Detection API graph (normalised [ymin, xmin, ymax, xmax] boxes, scores,
    COCO ids) as {"boxes" (K, 4) pixels (x0, y0, x1, y1), "scores", "labels" (COCO ids), "names"}, for the
    detections scoring at least min_score."""
    keep = np.asarray(scores) >= min_score
    ymin, xmin, ymax, xmax = np.asarray(boxes, dtype=np.float32)[keep].T
    pixels = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], 1).astype(np.float32)
    labels = np.asarray(classes)[keep].astype(np.int64)
    names = [COCO_CLASSES.get(int(c), f"id {int(c)}") for c in labels]
    return {"boxes": pixels, "scores": np.asarray(scores, dtype=np.float32)[keep], "labels": labels, "names": names}


# ----------------------------------------------------------------------------- COCO-style mAP


def _coco_evaluation(gt_boxes: list, gt_labels: list, detections: list[dict], num_classes: int):
    """pycocotools' COCOeval for the true boxes and `detections`, evaluated, accumulated and summarised; None when
    there is no detection at all."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not (len(gt_boxes) == len(gt_labels) == len(detections)):
        raise ValueError(
            f"one entry per image: {len(gt_boxes)} box arrays, {len(gt_labels)} label arrays, {len(detections)} "
            "detection dicts"
        )
    images, annotations, results = [], [], []
    for image_id, (boxes, labels, found) in enumerate(zip(gt_boxes, gt_labels, detections), start=1):
        images.append({"id": image_id})
        for (x0, y0, x1, y1), label in zip(np.asarray(boxes).reshape(-1, 4).tolist(), np.asarray(labels).tolist()):
            box = [x0, y0, x1 - x0, y1 - y0]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1, "bbox": box}
                | {"area": box[2] * box[3], "iscrowd": 0}
            )
        for (x0, y0, x1, y1), score, label in zip(
            np.asarray(found["boxes"]).reshape(-1, 4).tolist(), found["scores"], found["labels"]
        ):
            results.append(
                {"image_id": image_id, "category_id": int(label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0]}
                | {"score": float(score)}
            )
    if not results:
        return None
    categories = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations, "categories": categories}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def coco_map(gt_boxes: list, gt_labels: list, detections: list[dict], num_classes: int) -> dict[str, float]:
    """COCO-style average precision of `detections` (from `decode`) against the true boxes, computed by pycocotools:
    {"mAP": AP averaged over IoU thresholds 0.50:0.05:0.95 and classes, "AP50": AP at IoU 0.5, "AP75": at 0.75}."""
    evaluation = _coco_evaluation(gt_boxes, gt_labels, detections, num_classes)
    if evaluation is None:
        return {"mAP": 0.0, "AP50": 0.0, "AP75": 0.0}
    stats = [max(0.0, float(s)) for s in evaluation.stats[:3]]  # -1 means "no true boxes": counted as 0 here
    return {"mAP": stats[0], "AP50": stats[1], "AP75": stats[2]}


def coco_breakdown(gt_boxes: list, gt_labels: list, detections: list[dict], num_classes: int) -> dict:
    """Where the errors are, from the same pycocotools evaluation as `coco_map` (100 detections per image):

    - "per_class": {label: {"true boxes", "AP", "AP50"}}: AP over IoU 0.50:0.95 and at 0.5 (NaN: no true box);
      the mean over the classes with true boxes is `coco_map`'s mAP;
    - "by_size": {"small" (area below 32² pixels), "medium" (32² to 96²), "large"}: {"true boxes", "AP"}, COCO's
      APs, APm and APl (NaN: no true box of that size);
    - "recall": COCO's 101 recall levels, and "precision": {label: the interpolated precision at each level, IoU
      0.5}; 0 beyond the highest recall the detections reach, NaN for a class without true boxes.
    """
    evaluation = _coco_evaluation(gt_boxes, gt_labels, detections, num_classes)
    labels = np.concatenate([np.asarray(lab).reshape(-1) for lab in gt_labels]).astype(int)
    boxes = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in gt_boxes])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ranges = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, np.inf)}
    if evaluation is None:  # no detection at all: precision 0 wherever there is a true box
        precision = np.zeros((10, 101, num_classes))
        size_ap = [0.0 if ((areas >= lo) & (areas < hi)).any() else -1.0 for lo, hi in ranges.values()]
    else:
        precision = evaluation.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall levels, classes)
        size_ap = [float(s) for s in evaluation.stats[3:6]]  # APs, APm, APl; -1: no true box of that size
    counts = np.bincount(labels, minlength=num_classes)
    precision = np.where(counts[None, None, :] > 0, np.maximum(precision, 0.0), np.nan)
    per_class = {
        c: {
            "true boxes": int(counts[c]),
            "AP": float(precision[:, :, c].mean()),
            "AP50": float(precision[0, :, c].mean()),
        }
        for c in range(num_classes)
    }
    by_size = {
        name: {"true boxes": int(((areas >= lo) & (areas < hi)).sum()), "AP": ap if ap >= 0 else float("nan")}
        for (name, (lo, hi)), ap in zip(ranges.items(), size_ap)
    }
    return {
        "per_class": per_class,
        "by_size": by_size,
        "recall": np.linspace(0, 1, 101),
        "precision": {c: precision[0, :, c] for c in range(num_classes)},
    }


# ----------------------------------------------------------------------------- drawing


def draw_detections(ax, image: np.ndarray, found: dict, names=None, color: str = "yellow"):
    """Show `image` on a matplotlib axis with the boxes of `found` ({"boxes", "labels", optional "scores"}) and
    their class names (`names`: a sequence or dict from label to name; default the label)."""
    from matplotlib import patches

    ax.imshow(image)
    ax.set_axis_off()
    scores = found.get("scores")
    for i, ((x0, y0, x1, y1), label) in enumerate(zip(np.asarray(found["boxes"]).tolist(), found["labels"])):
        ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.5))
        text = str(names[int(label)]) if names is not None else str(int(label))
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        ax.text(x0, y0, text, color="black", fontsize=7, va="bottom", bbox={"facecolor": color, "pad": 1, "lw": 0})
    return ax
