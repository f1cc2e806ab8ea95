"""Chapter 18: constructed scenes are deterministic with exact boxes; COCO-style mAP from pycocotools matches cases
computed by hand; the target encoding decodes back to the true boxes; the detection loss equals a NumPy
computation in both frameworks; the two frameworks' detectors compute the same maps and train alike from the same
weights; bad boxes and labels get one ValueError each on both frameworks' training path; the COCO SSD detector gives
the same detections as a TF graph (Keras) and as ONNX (PyTorch)."""

import numpy as np
import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from helpers import detection
from helpers import keras as hk  # conftest.py has imported torch first, as it must be
from helpers import torch as ht
from helpers.keras.mobilenet_port import leaf_layers

FRAMEWORKS = {"torch": ht, "keras": hk}
SIZE = 64  # scene side in the tests: a 4 x 4 output grid


@pytest.fixture(scope="module")
def scenes():
    return detection.make_scenes(6, SIZE, seed=3)


def test_scenes_are_deterministic_and_their_boxes_exact(scenes):
    again = detection.make_scenes(6, SIZE, seed=3)
    assert np.array_equal(scenes["images"], again["images"])
    assert all(np.array_equal(a, b) for a, b in zip(scenes["boxes"], again["boxes"]))
    assert not np.array_equal(scenes["images"], detection.make_scenes(6, SIZE, seed=4)["images"])
    for boxes, labels in zip(scenes["boxes"], scenes["labels"]):
        detection.check_boxes(boxes, labels, SIZE, len(detection.SCENE_CLASSES))  # inside the image, positive size
        assert 1 <= len(boxes) <= 3
    alpha = detection._item_alpha(np.pad(np.full((10, 4), 200, np.uint8), 9), 20)  # a bar of ink, padded
    assert alpha.shape == (20, 8)  # the longer side scaled to 20: the box is the ink's extent, nothing around it
    assert alpha[0].max() > 0 and alpha[-1].max() > 0 and alpha[:, 0].max() > 0 and alpha[:, -1].max() > 0


def _perfect(boxes, labels):
    return [{"boxes": b, "labels": y, "scores": np.ones(len(b), np.float32)} for b, y in zip(boxes, labels)]


def test_coco_map_on_cases_computed_by_hand():
    boxes = [np.array([[10, 10, 40, 50]], np.float32), np.array([[0, 0, 30, 30]], np.float32)]
    labels = [np.array([0]), np.array([1])]
    assert detection.coco_map(boxes, labels, _perfect(boxes, labels), 2) == pytest.approx(
        {"mAP": 1.0, "AP50": 1.0, "AP75": 1.0}
    )
    wrong_class = _perfect(boxes, [np.array([1]), np.array([0])])
    assert detection.coco_map(boxes, labels, wrong_class, 2)["mAP"] == 0.0
    # one class, two objects, one found: precision 1 up to recall 0.5, so 51 of the 101 recall points count
    two = [np.array([[10, 10, 40, 50], [50, 50, 60, 60]], np.float32)]
    half = detection.coco_map(two, [np.array([0, 0])], _perfect([two[0][:1]], [np.array([0])]), 1)
    assert half["mAP"] == pytest.approx(51 / 101)
    # a box of IoU 0.72 with the truth matches at the IoU thresholds 0.50..0.70: five of ten
    found = [{"boxes": np.array([[10, 10, 40, 10 + 0.72 * 40]]), "labels": np.array([0]), "scores": np.array([0.9])}]
    result = detection.coco_map(boxes[:1], labels[:1], found, 1)
    assert result == pytest.approx({"mAP": 0.5, "AP50": 1.0, "AP75": 0.0})
    assert detection.coco_map(boxes, labels, [{"boxes": [], "labels": [], "scores": []}] * 2, 2)["mAP"] == 0.0


def test_coco_breakdown_per_class_and_size_on_cases_computed_by_hand():
    # class 0: a small box (30 x 30) found exactly; class 1: a medium box (40 x 40) and a small one, only the medium
    # one found; class 2: no true box
    boxes = [np.array([[0, 0, 30, 30]], np.float32), np.array([[0, 0, 40, 40], [50, 50, 70, 70]], np.float32)]
    labels = [np.array([0]), np.array([1, 1])]
    found = [
        {"boxes": boxes[0], "labels": np.array([0]), "scores": np.array([0.9])},
        {"boxes": boxes[1][:1], "labels": np.array([1]), "scores": np.array([0.8])},
    ]
    result = detection.coco_breakdown(boxes, labels, found, 3)
    assert result["per_class"][0] == {"true boxes": 1, "AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}
    assert result["per_class"][1]["true boxes"] == 2 and result["per_class"][1]["AP"] == pytest.approx(51 / 101)
    assert np.isnan(result["per_class"][2]["AP"]) and np.isnan(result["precision"][2]).all()
    overall = detection.coco_map(boxes, labels, found, 3)["mAP"]
    assert np.mean([result["per_class"][c]["AP"] for c in (0, 1)]) == pytest.approx(overall)
    # small boxes: class 0's found (AP 1), class 1's missed (AP 0); the medium box found
    assert result["by_size"]["small"] == {"true boxes": 2, "AP": pytest.approx(0.5)}
    assert result["by_size"]["medium"] == {"true boxes": 1, "AP": pytest.approx(1.0)}
    assert result["by_size"]["large"]["true boxes"] == 0 and np.isnan(result["by_size"]["large"]["AP"])
    curve = result["precision"][1]
    assert len(curve) == len(result["recall"]) == 101
    assert np.allclose(curve[:51], 1) and (curve[51:] == 0).all()
    nothing = detection.coco_breakdown(boxes, labels, [{"boxes": [], "labels": [], "scores": []}] * 2, 3)
    assert nothing["per_class"][1]["AP"] == 0.0 and nothing["by_size"]["small"]["AP"] == 0.0


def test_encoded_targets_decode_back_to_the_true_boxes(scenes):
    num_classes = len(detection.SCENE_CLASSES)
    targets = detection.encode_targets(scenes["boxes"], scenes["labels"], SIZE, num_classes)
    assert targets.shape == (6, SIZE // 16, SIZE // 16, num_classes + 5)
    assert targets[..., -1].sum() == sum(len(b) for b in scenes["boxes"])
    maps = np.concatenate([np.where(targets[..., :num_classes] > 0, 8.0, -8.0), targets[..., num_classes:-1]], -1)
    found = detection.decode(maps, SIZE)
    for boxes, labels, got in zip(scenes["boxes"], scenes["labels"], found):
        order = np.lexsort(boxes.T[::-1])
        got_order = np.lexsort(got["boxes"].T[::-1])
        np.testing.assert_allclose(got["boxes"][got_order], boxes[order], atol=1e-3)
        assert np.array_equal(got["labels"][got_order], labels[order])
    assert detection.coco_map(scenes["boxes"], scenes["labels"], found, num_classes)["mAP"] == pytest.approx(1.0)


def _numpy_loss(outputs, targets):
    num_classes = targets.shape[-1] - 5
    logits, truth, centres = outputs[..., :num_classes], targets[..., :num_classes], targets[..., -1]
    p = 1 / (1 + np.exp(-logits))
    ce = -(truth * np.log(p) + (1 - truth) * np.log(1 - p))
    p_t = np.where(truth == 1, p, 1 - p)
    alpha = np.where(truth == 1, 0.25, 0.75)
    box = np.abs(outputs[..., num_classes:] - targets[..., num_classes:-1]).sum(-1)
    return ((alpha * (1 - p_t) ** 2 * ce).sum() + (centres * box).sum()) / max(centres.sum(), 1)


def test_detection_loss_equals_a_numpy_computation(scenes):
    targets = detection.encode_targets(scenes["boxes"], scenes["labels"], SIZE, 4)
    outputs = np.random.default_rng(0).normal(size=targets.shape[:-1] + (8,)).astype(np.float32)
    expected = _numpy_loss(outputs.astype(np.float64), targets.astype(np.float64))
    got_torch = float(ht.detection_loss(torch.from_numpy(outputs), torch.from_numpy(targets)))
    got_keras = float(hk.detection_loss(outputs, targets))
    assert got_torch == pytest.approx(expected, rel=1e-5) and got_keras == pytest.approx(expected, rel=1e-5)


def _keras_twin(torch_model):
    """A Keras detector with the PyTorch detector's weights (the backbone is the same ImageNet port)."""
    hk.seed(0)
    model = hk.detection_model(4)
    for index in (0, 2):
        conv = torch_model.head[index]
        kernel = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
        model.get_layer(f"head_{index}").set_weights([kernel, conv.bias.detach().numpy()])
    return model


def test_both_frameworks_compute_the_same_maps_and_train_alike(scenes):
    ht.seed(0)
    torch_model = ht.detection_model(4)
    keras_model = _keras_twin(torch_model)
    x = detection.scene_input(scenes["images"])
    np.testing.assert_allclose(ht.predict_maps(torch_model, x), hk.predict_maps(keras_model, x), atol=1e-3)
    args = (x, scenes["boxes"], scenes["labels"])
    torch_losses = ht.train_detector(torch_model, *args, steps=3, batch_size=4, lr=1e-3, seed=1)
    keras_losses = hk.train_detector(keras_model, *args, steps=3, batch_size=4, lr=1e-3, seed=1)
    np.testing.assert_allclose(torch_losses, keras_losses, rtol=2e-3)  # same batches, same Adam steps
    assert torch_losses[-1] < torch_losses[0]


BAD = {
    "outside the image": ([[10, 10, 80, 30]], [0], "outside"),
    "negative width": ([[30, 10, 20, 30]], [0], "negative"),
    "label outside the class list": ([[10, 10, 20, 30]], [4], "class ids in 0..3"),
}


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_bad_boxes_and_labels_get_one_clear_error(name, scenes):
    book = FRAMEWORKS[name]
    book.seed(0)
    model = book.detection_model(4, weights=None)
    x = detection.scene_input(scenes["images"][:1])
    for boxes, labels, message in BAD.values():
        with pytest.raises(ValueError, match=message):
            book.train_detector(model, x, [np.array(boxes, np.float32)], [np.array(labels)], steps=1)
        with pytest.raises(ValueError, match=message):
            detection.check_boxes(boxes, labels, SIZE, 4)


def test_the_coco_detector_finds_the_same_objects_in_tensorflow_and_onnx():
    photos = [detection.data.load_photo(name) for name in ("astronaut", "chelsea", "coffee")]
    onnx_found = ht.detect_coco(ht.coco_detector(), photos, min_score=0.3)
    tf_found = hk.detect_coco(hk.coco_detector(), photos, min_score=0.3)
    for name, a, b in zip(("person", "cat", "cup"), onnx_found, tf_found):
        assert a["names"][0] == b["names"][0] == name and a["scores"][0] > 0.8
        assert np.array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=0.5)  # pixels


def test_check_norm_defaults_and_refusals():
    assert detection.check_norm("imagenet", None) == "frozen" and detection.check_norm(None, None) == "group"
    with pytest.raises(ValueError, match="random backbone"):
        detection.check_norm(None, "frozen")
    with pytest.raises(ValueError, match="norm must be one of"):
        detection.check_norm("imagenet", "layer")


def test_frozen_batchnorm_stays_put_and_groupnorm_replaces_it(scenes):
    """Training moves the convolutions but not the frozen BatchNorm statistics or scale (both frameworks); a random
    backbone gets GroupNorm and no BatchNorm at all."""
    x = detection.scene_input(scenes["images"])
    args = (x, scenes["boxes"], scenes["labels"])
    ht.seed(0)
    model = ht.detection_model(4)
    norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    before = [b.clone() for m in norms for b in m.buffers()]
    conv = model.features[0][0].weight.detach().clone()
    ht.train_detector(model, *args, steps=2, batch_size=4)
    assert all(torch.equal(a, b) for a, b in zip(before, [b for m in norms for b in m.buffers()]))
    assert norms and not torch.equal(conv, model.features[0][0].weight)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    random = ht.detection_model(4, weights=None)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in random.modules())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in random.modules())

    hk.seed(0)
    keras_model = hk.detection_model(4)
    bn = [layer for layer in leaf_layers(keras_model) if type(layer).__name__ == "BatchNormalization"]
    before = [w.numpy() for layer in bn for w in layer.weights]
    hk.train_detector(keras_model, *args, steps=2, batch_size=4)
    after = [w.numpy() for layer in bn for w in layer.weights]
    assert bn and all(np.array_equal(a, b) for a, b in zip(before, after))
    names = {type(layer).__name__ for layer in leaf_layers(hk.detection_model(4, weights=None))}
    assert "BatchNormalization" not in names and "_GroupNorm" in names
