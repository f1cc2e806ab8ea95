"""Fine-tuning strategies (chapter 03): partial unfreezing, discriminative learning rates, run once per framework with
the same test code."""

import importlib
import subprocess
import sys

import numpy as np
import pytest


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


def _is_torch(book):
    return book.__name__ == "helpers.torch"


def _state(book, layer, statistics=True):
    """Weights (and, with statistics=True, BatchNorm running statistics) of a model or block, as NumPy arrays."""
    if _is_torch(book):
        items = layer.state_dict().items() if statistics else layer.named_parameters()
        return {k: v.detach().cpu().numpy().copy() for k, v in items if "num_batches" not in k}
    return {w.path: np.array(w.numpy()) for w in layer.weights if statistics or "moving_" not in w.path}


def _moved(before, after):
    return [k for k in before if not np.array_equal(before[k], after[k])]


def test_unfreeze_top_trains_only_the_top_blocks_and_the_head(book, clothes):
    book.seed(0)
    model = book.unfreeze_top(book.small_cnn(5), 1)
    found = book.blocks(model)
    top_and_head = book.count_params(model)["total"] - sum(book.count_params(b)["total"] for b in found[:-1])
    assert book.count_params(model)["trainable"] == top_and_head
    before = [_state(book, b) for b in found]
    book.fit(model, clothes, epochs=2, lr=0.05, batch_size=20, optimizer="sgd", verbose=False)
    after = [_state(book, b) for b in found]
    for i in range(len(found) - 1):
        assert not _moved(before[i], after[i]), f"frozen block {i} changed (weights or BatchNorm statistics)"
    moved = _moved(before[-1], after[-1])
    assert any("mean" in k for k in moved), "the unfrozen block's BatchNorm statistics should update"
    assert len(moved) == len(before[-1]), "every weight of the unfrozen block should train"


def test_unfreeze_top_on_mobilenet_counts_the_unfrozen_blocks(book):
    backbone = book.pretrained_backbone("mobilenet_v2")
    model = book.add_head(backbone, book.new_head(book.feature_dim(backbone), 3))
    head = 1280 * 3 + 3
    found = book.blocks(model)
    assert book.count_params(book.unfreeze_top(model, 0))["trainable"] == head
    top_two = sum(book.count_params(b)["total"] for b in found[-2:])
    assert book.count_params(book.unfreeze_top(model, 2))["trainable"] == head + top_two
    assert book.count_params(book.unfreeze_top(model, len(found)))["trainable"] == book.count_params(model)["total"]


def test_unfreeze_top_rejects_a_depth_beyond_the_network(book):
    model = book.small_cnn(3)
    for bad in (5, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"from 0 to 4 \(this network has 4 blocks\)"):
            book.unfreeze_top(model, bad)


def test_block_learning_rates_decay_from_the_head_down(book):
    model = book.small_cnn(3)
    assert book.block_learning_rates(model, 1.0, 0.5) == [1 / 16, 1 / 8, 1 / 4, 1 / 2]
    assert book.block_learning_rates(model, 0.01, None) == [0.01] * 4


def _head(book, model):
    return model.head if _is_torch(book) else model.get_layer("head")


@pytest.mark.parametrize("optimizer, weight_decay", [("adam", None), ("adam", 0.5), ("adamw", 0.5)])
def test_each_block_steps_at_its_own_rate(book, clothes, optimizer, weight_decay):
    """Adam's first step moves every weight by about its rate whatever the gradient's size, so the largest step
    in each block measures the rate that block trained at (scaling gradients instead would not change it).
    Decoupled weight decay shrinks each block's weights at that block's rate too: w <- w (1 - rate * decay)."""
    book.seed(0)
    model = book.small_cnn(5)
    lr, decay, wd = 1e-3, 0.5, weight_decay or 0.0
    layers = [*book.blocks(model), _head(book, model)]
    before = [_state(book, layer, statistics=False) for layer in layers]
    book.fit(
        model,
        clothes,
        epochs=1,
        lr=lr,
        batch_size=len(clothes[1]),
        optimizer=optimizer,
        weight_decay=weight_decay,
        block_lr_decay=decay,
        verbose=False,
    )
    rates = [*book.block_learning_rates(model, lr, decay), lr]
    steps = []
    for layer, old, rate in zip(layers, before, rates):
        new = _state(book, layer, statistics=False)
        steps.append(max(np.abs(new[k] - old[k] * (1 - rate * wd)).max() for k in old))
    np.testing.assert_allclose(steps, rates, rtol=0.02)


def test_discriminative_rates_reject_nonsense(book, clothes):
    model = book.small_cnn(5)
    for bad in (0, -0.5, 1.5, "0.5"):
        with pytest.raises(ValueError, match=r"block_lr_decay must be a number in \(0, 1\]"):
            book.fit(model, clothes, block_lr_decay=bad, verbose=False)
    features = np.zeros((4, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="found no feature blocks"):
        book.fit(book.new_head(16, 3), (features, np.zeros(4, int)), block_lr_decay=0.5, verbose=False)


def test_the_neutral_module_imports_no_framework():
    code = (
        "import sys, helpers.finetuning_strategies;"
        "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
