"""Chapter 05: optimizers, schedules, losses, decoupled weight decay and the learning-rate range test.

The `features` fixture (three separable clusters) is in tests/conftest.py; chapter 06 uses it too.
"""

import importlib

import numpy as np
import pytest

from helpers import keras as hk
from helpers import torch as ht
from helpers import tuning


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


def _copy_head(torch_head, keras_head):
    """Give a Keras head the weights of a PyTorch head (Linear weight is the transposed Dense kernel)."""
    linear = torch_head[1]
    keras_head.layers[-1].set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])


def _both_heads(seed=0):
    ht.seed(seed)
    torch_head, keras_head = ht.new_head(16, 3), hk.new_head(16, 3)
    _copy_head(torch_head, keras_head)
    return torch_head, keras_head


# ---- schedules ----


@pytest.mark.parametrize("schedule", tuning.SCHEDULES)
@pytest.mark.parametrize("total_steps", [2, 7, 60, 250])
def test_pytorch_and_keras_schedules_give_the_same_rate_at_every_step(schedule, total_steps):
    lr = 0.05
    torch_rates = ht.learning_rates(schedule, lr, total_steps)
    keras_rates = hk.learning_rates(schedule, lr, total_steps)
    assert torch_rates.shape == keras_rates.shape == (total_steps,)
    np.testing.assert_allclose(torch_rates, keras_rates, rtol=1e-5, atol=1e-6 * lr)


def test_schedules_have_the_documented_shapes(book):
    lr, total = 0.1, 100
    rates = {name: book.learning_rates(name, lr, total) for name in tuning.SCHEDULES}
    np.testing.assert_allclose(rates["constant"], lr)
    drops = len(tuning.STEP_AT)
    assert len(np.unique(rates["step"].round(12))) == drops + 1
    assert rates["step"][0] == pytest.approx(lr) and rates["step"][-1] == pytest.approx(lr * tuning.STEP_FACTOR**drops)
    assert np.flatnonzero(np.diff(rates["step"])).tolist() == [m - 1 for m in tuning.step_milestones(total)]
    assert np.all(np.diff(rates["exponential"]) < 0)
    assert rates["exponential"][-1] == pytest.approx(lr * tuning.EXPONENTIAL_FINAL ** ((total - 1) / total), rel=1e-5)
    assert rates["cosine"][0] == pytest.approx(lr) and np.all(np.diff(rates["cosine"]) < 0)
    warmup = tuning.warmup_steps(total)
    for name in ("warmup", "warmup_cosine"):
        assert rates[name][0] == pytest.approx(lr * tuning.WARMUP_START)
        assert np.all(np.diff(rates[name][: warmup + 1]) > 0) and rates[name][warmup] == pytest.approx(lr)
    np.testing.assert_allclose(rates["warmup"][warmup:], lr, rtol=1e-6)
    assert np.all(np.diff(rates["warmup_cosine"][warmup:]) < 0)


# ---- optimizers and losses: the same settings train the same weights in both frameworks ----


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw", "adagrad", "rmsprop"])
def test_every_optimizer_trains_the_same_weights_in_both_frameworks(optimizer, features):
    torch_head, keras_head = _both_heads()
    options = dict(epochs=6, lr=0.05, batch_size=len(features[1]), optimizer=optimizer, verbose=False)
    # SGD with momentum matches only at a constant rate: PyTorch multiplies the whole velocity by the current rate,
    # Keras multiplies each gradient by the rate of its step before adding it to the velocity.
    options.update(weight_decay=0.1, schedule=None if optimizer == "momentum" else "warmup_cosine")
    ht.fit(torch_head, features, **options)
    hk.fit(keras_head, features, **options)
    np.testing.assert_allclose(ht.predict(torch_head, features[0]), hk.predict(keras_head, features[0]), atol=2e-4)


@pytest.mark.parametrize(
    "loss, label_smoothing, l2_sp",
    [("cross_entropy", 0.2, 0.0), ("squared_error", 0.0, 0.0), ("huber", 0.1, 0.0), ("cross_entropy", 0.0, 0.5)],
)
def test_every_loss_trains_the_same_weights_in_both_frameworks(loss, label_smoothing, l2_sp, features):
    torch_head, keras_head = _both_heads()
    options = dict(epochs=5, lr=0.5, batch_size=len(features[1]), optimizer="sgd", verbose=False)
    options.update(loss=loss, label_smoothing=label_smoothing, l2_sp=l2_sp)
    torch_history = ht.fit(torch_head, features, **options)
    keras_history = hk.fit(keras_head, features, **options)
    np.testing.assert_allclose(torch_history["loss"], keras_history["loss"], rtol=1e-4)
    np.testing.assert_allclose(ht.predict(torch_head, features[0]), hk.predict(keras_head, features[0]), atol=1e-4)


def test_decoupled_weight_decay_shrinks_the_weights(book, features):
    scale = {}  # mean absolute logit: proportional to the size of the weights
    for decay in (0.0, 0.5):
        book.seed(0)
        head = book.new_head(16, 3)
        book.fit(
            head, features, epochs=10, lr=0.1, batch_size=16, optimizer="momentum", weight_decay=decay, verbose=False
        )
        scale[decay] = np.abs(book.predict(head, features[0])).mean()
    assert scale[0.5] < 0.8 * scale[0.0]


# ---- the learning-rate range test ----


def test_lr_range_test_rises_stops_on_divergence_and_restores_the_weights(book, features):
    book.seed(0)
    head = book.new_head(16, 3)
    x, y = features
    before = book.predict(head, x)
    shuffled = (x, np.random.default_rng(0).permutation(y))  # not separable: a huge rate cannot drive the loss to 0
    result = book.lr_range_test(head, shuffled, min_lr=1e-4, max_lr=1e4, steps=60, batch_size=16, optimizer="sgd")
    assert len(result["lr"]) == len(result["loss"]) < 60, "a rate of 1e4 must make the loss diverge"
    assert np.all(np.diff(result["lr"]) > 0)
    np.testing.assert_array_equal(book.predict(head, x), before)
    assert 1e-5 <= tuning.suggest_lr(result) <= 1e3


def test_range_test_uses_the_same_batches_in_both_frameworks(features):
    torch_head, keras_head = _both_heads()
    options = dict(min_lr=1e-3, max_lr=1.0, steps=12, batch_size=16, optimizer="sgd")
    torch_result = ht.lr_range_test(torch_head, features, **options)
    keras_result = hk.lr_range_test(keras_head, features, **options)
    np.testing.assert_allclose(torch_result["loss"], keras_result["loss"], rtol=1e-4)


# ---- neutral helpers ----


def test_smoothing_and_suggestion():
    np.testing.assert_allclose(tuning.smooth(np.full(5, 2.0)), 2.0)
    rates = np.geomspace(1e-5, 1, 50)
    losses = (np.log10(rates) + 2) ** 2  # lowest at 1e-2
    assert 1e-3 <= tuning.suggest_lr({"lr": rates, "loss": losses}) <= 1e-2  # smoothing lags: minimum a bit later
    assert tuning.diverged([1.0, 1.0, 1.0, 100.0]) and not tuning.diverged([1.0, 0.9, 0.8])


def test_batch_order_passes_over_all_examples():
    batches = tuning.batch_order(10, 4, 5, seed=0)
    assert [len(b) for b in batches] == [4] * 5
    assert sorted(np.concatenate(batches[:2]).tolist() + batches[2][:2].tolist()) == list(range(10))


# ---- bad input ----


def test_bad_input_gets_a_clear_error(book, features):
    head = book.new_head(16, 3)
    fit = lambda **options: book.fit(head, features, verbose=False, **options)
    with pytest.raises(ValueError, match="known optimizers: adam, adamw, sgd, momentum, adagrad, rmsprop"):
        fit(optimizer="adamm")
    with pytest.raises(ValueError, match="known schedules: constant, step, exponential, cosine, warmup"):
        fit(schedule="one_cycle")
    with pytest.raises(ValueError, match="known losses: cross_entropy, squared_error, huber"):
        fit(loss="hinge")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        fit(label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        fit(weight_decay=-0.1)
    with pytest.raises(ValueError, match="known schedules"):
        book.learning_rates("cosine_restarts", 0.1, 10)
    with pytest.raises(ValueError, match="lr must be positive"):
        book.learning_rates("cosine", 0.0, 10)
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        book.learning_rates("cosine", 0.1, 0)
    with pytest.raises(ValueError, match="need 0 < min_lr < max_lr"):
        book.lr_range_test(head, features, min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        book.lr_range_test(head, features, batch_size=0)
    with pytest.raises(ValueError, match="known optimizers"):
        book.lr_range_test(head, features, optimizer="lamb")
