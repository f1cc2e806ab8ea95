"""Chapter 11: the distillation loss against a NumPy computation in both frameworks, the T^2 scaling, distillation
and multi-task training, and the bad input both frameworks refuse with the same ValueError."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from helpers import distillation
from helpers import keras as hk  # conftest.py has imported torch first, as it must be
from helpers import torch as ht

RNG = np.random.default_rng(0)
STUDENT = RNG.normal(size=(6, 5)).astype(np.float32)
TEACHER = (3 * RNG.normal(size=(6, 5))).astype(np.float32)
LABELS = np.array([0, 4, -1, 2, -1, 1])


def numpy_loss(student, teacher, labels, temperature, alpha):
    """Hinton et al.'s loss by hand: alpha T^2 mean KL(p_t || p_s) + (1 - alpha) mean CE over the labelled rows."""

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_t, p_s = softmax(teacher / temperature), softmax(student / temperature)
    soft = temperature**2 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    if labels is None:
        return alpha * soft
    rows = np.flatnonzero(labels >= 0)
    hard = -np.mean(np.log(softmax(student[rows])[np.arange(len(rows)), labels[rows]])) if len(rows) else 0.0
    return alpha * soft + (1 - alpha) * hard


def torch_loss(student, teacher, labels, temperature, alpha):
    labels = None if labels is None else torch.from_numpy(labels)
    return float(ht.distillation_loss(torch.from_numpy(student), torch.from_numpy(teacher), labels, temperature, alpha))


def keras_loss(student, teacher, labels, temperature, alpha):
    return float(hk.distillation_loss(student, teacher, labels, temperature, alpha))


LOSSES = {"torch": torch_loss, "keras": keras_loss}
FRAMEWORKS = {"torch": ht, "keras": hk}


@pytest.mark.parametrize("framework", LOSSES)
@pytest.mark.parametrize(
    "labels, temperature, alpha",
    [(LABELS, 4.0, 0.5), (LABELS, 1.0, 0.0), (LABELS, 2.5, 1.0), (None, 3.0, 0.7), (np.full(6, -1), 2.0, 0.4)],
)
def test_distillation_loss_equals_a_numpy_computation(framework, labels, temperature, alpha):
    expected = numpy_loss(STUDENT, TEACHER, labels, temperature, alpha)
    assert LOSSES[framework](STUDENT, TEACHER, labels, temperature, alpha) == pytest.approx(expected, rel=1e-5)


def test_the_soft_term_is_zero_when_the_student_copies_the_teacher():
    for loss in LOSSES.values():
        assert loss(TEACHER, TEACHER, None, 4.0, 1.0) == pytest.approx(0.0, abs=1e-5)


def _soft_gradient_norm(framework, temperature, student=STUDENT, teacher=TEACHER):
    if framework == "torch":
        logits = torch.from_numpy(student).requires_grad_(True)
        ht.distillation_loss(logits, torch.from_numpy(teacher), None, temperature, 1.0).backward()
        return float(logits.grad.norm())
    logits = tf.Variable(student)
    with tf.GradientTape() as tape:
        loss = hk.distillation_loss(logits, teacher, None, temperature, 1.0)
    return float(tf.norm(tape.gradient(loss, logits)))


@pytest.mark.parametrize("framework", LOSSES)
def test_t_squared_keeps_the_soft_gradient_comparable_across_temperatures(framework):
    """Without T^2 the soft term's gradient shrinks like 1/T^2; with it, the size stays within a small factor."""
    norms = {t: _soft_gradient_norm(framework, t) for t in (2.0, 4.0, 8.0, 16.0)}
    assert max(norms.values()) / min(norms.values()) < 2.0, norms
    unscaled = {t: n / t**2 for t, n in norms.items()}
    assert unscaled[2.0] / unscaled[16.0] > 30, unscaled
    np.testing.assert_allclose(_soft_gradient_norm("torch", 8.0), _soft_gradient_norm("keras", 8.0), rtol=1e-4)


@pytest.mark.parametrize("framework", LOSSES)
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), "4"])
def test_a_temperature_that_is_not_positive_is_refused(framework, temperature):
    with pytest.raises(ValueError, match="temperature"):
        LOSSES[framework](STUDENT, TEACHER, LABELS, temperature, 0.5)


@pytest.mark.parametrize("framework", LOSSES)
@pytest.mark.parametrize("alpha", [-0.1, 1.5, True])
def test_a_soft_weight_outside_zero_one_is_refused(framework, alpha):
    with pytest.raises(ValueError, match=r"alpha.*\[0, 1\]"):
        LOSSES[framework](STUDENT, TEACHER, LABELS, 4.0, alpha)


@pytest.mark.parametrize("framework", LOSSES)
def test_teacher_logits_of_another_shape_are_refused(framework):
    with pytest.raises(ValueError, match="do not match the student's outputs"):
        LOSSES[framework](STUDENT, TEACHER[:, :4], LABELS, 4.0, 0.5)
    with pytest.raises(ValueError, match="do not match the student's outputs"):
        LOSSES[framework](STUDENT, TEACHER[:4], LABELS[:4], 4.0, 0.5)


IMAGES = RNG.random((48, 28, 28, 1)).astype(np.float32)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fit_distilled_refuses_bad_input_before_training(framework):
    book = FRAMEWORKS[framework]
    teacher = RNG.normal(size=(48, 10)).astype(np.float32)
    student = book.small_cnn(10)
    bad = {
        "temperature": {"temperature": 0},
        r"alpha": {"alpha": 2.0},
        "do not match the student's outputs and the data": {"teacher_logits": teacher[:, :3]},
    }
    for message, change in bad.items():
        arguments = {"teacher_logits": teacher, "labels": None, **change}
        with pytest.raises(ValueError, match=message):
            book.fit_distilled(student, IMAGES, **arguments)
    with pytest.raises(ValueError, match="do not match the student's outputs and the data"):
        book.fit_distilled(student, IMAGES, teacher[:40])
    with pytest.raises(ValueError, match="labels must be in 0..9 or -1"):
        book.fit_distilled(student, IMAGES, teacher, np.full(48, 10))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fit_distilled_pulls_the_student_toward_the_teacher(framework):
    """On images without labels, distillation lowers the soft loss of the student against the teacher's logits."""
    book = FRAMEWORKS[framework]
    book.seed(0)
    teacher = (3 * RNG.normal(size=(48, 10))).astype(np.float32)
    student = book.small_cnn(10)
    history = book.fit_distilled(student, IMAGES, teacher, None, 2.0, 1.0, epochs=4, lr=1e-2, batch_size=16)
    assert len(history["loss"]) == 4 and history["loss"][-1] < 0.8 * history["loss"][0], history


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_multi_head_cnn_shares_one_backbone(framework):
    book = FRAMEWORKS[framework]
    book.seed(0)
    model = book.multi_head_cnn((10, 4))
    single = book.count_params(book.small_cnn(10))["total"]
    head_4 = book.count_params(book.new_head(128, 4))["total"]
    assert book.count_params(model)["total"] == single + head_4
    first, second = book.task_model(model, 0), book.task_model(model, -1)
    assert book.predict(first, IMAGES[:2]).shape == (2, 10) and book.predict(second, IMAGES[:2]).shape == (2, 4)
    before = book.predict(second, IMAGES[:4])
    labels = np.arange(48) % 10
    history = book.fit_multitask(model, [(IMAGES, labels), (IMAGES[:20], labels[:20] % 4)], epochs=2, batch_size=16)
    assert len(history["loss"]) == 2
    assert not np.allclose(book.predict(second, IMAGES[:4]), before), "training both tasks moved task 1's network"
    with pytest.raises(ValueError, match="one class count per task"):
        book.multi_head_cnn(10)
    with pytest.raises(ValueError, match="task must be an integer"):
        book.task_model(model, 2)
    with pytest.raises(ValueError, match="one per head"):
        book.fit_multitask(model, [(IMAGES, labels)])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_latency_reports_per_batch_and_per_image(framework):
    book = FRAMEWORKS[framework]
    timing = book.latency(book.small_cnn(10), IMAGES[:8], repeats=2)
    assert timing["batch"] == 8 and timing["ms per batch"] > 0
    assert timing["ms per image"] == pytest.approx(timing["ms per batch"] / 8)


def test_gap_recovered_and_soft_targets():
    np.testing.assert_allclose(distillation.gap_recovered([0.8, 0.75, 0.9], 0.7, 0.9), [0.5, 0.25, 1.0])
    assert distillation.gap_recovered(0.6, 0.7, 0.9) < 0  # distillation that hurts is negative
    with pytest.raises(ValueError, match="no gap"):
        distillation.gap_recovered(0.8, 0.7, 0.7)
    soft = distillation.soft_targets(TEACHER, 4.0)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    assert (soft.max(axis=1) < distillation.soft_targets(TEACHER, 1.0).max(axis=1)).all()
    assert distillation.mean_spread([0.5, 0.7]) == "0.600 ± 0.141 (n=2)"
    assert distillation.mean_spread([0.5]) == "0.500 (n=1)"  # never "± 0.000" for a single seed
    assert distillation.time_call(lambda: None, repeats=3, warmup=0) >= 0


def test_keras_ops_are_used_not_numpy():
    """The Keras loss is built from keras.ops, so it is differentiable inside a GradientTape (checked above) and
    returns a backend tensor."""
    assert keras.ops.is_tensor(hk.distillation_loss(STUDENT, TEACHER, LABELS))
