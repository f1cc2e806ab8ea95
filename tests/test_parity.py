"""helpers.torch and helpers.keras export the same names with the same signatures."""

import inspect

import numpy as np

from helpers import keras as hk
from helpers import torch as ht


def test_same_public_names():
    assert sorted(ht.__all__) == sorted(hk.__all__)
    for module in (ht, hk):
        assert all(callable(getattr(module, name)) for name in module.__all__)


def test_same_signatures():
    different = {
        name: (str(inspect.signature(getattr(ht, name))), str(inspect.signature(getattr(hk, name))))
        for name in ht.__all__
        if _shape(getattr(ht, name)) != _shape(getattr(hk, name))
    }
    assert not different, f"signatures differ: {different}"


def test_every_public_helper_has_a_docstring():
    for module in (ht, hk):
        missing = [name for name in module.__all__ if not (getattr(module, name).__doc__ or "").strip()]
        assert not missing, f"{module.__name__}: no docstring for {missing}"


def _shape(function):
    """Parameter names, kinds and defaults (annotations may name framework types)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_random_initialisation_matches_torchvision():
    """`weights=None` (the 'from scratch' baselines) starts both frameworks from the same distribution: torchvision's
    kaiming_normal_(mode='fan_out') for every convolution, so a from-scratch comparison is fair in both."""
    ht.seed(0)
    torch_stds = [
        float(p.detach().std())
        for p in ht.pretrained_backbone("mobilenet_v2", weights=None).parameters()
        if p.dim() == 4
    ]
    keras_stds = [
        float(np.std(w.numpy()))
        for w in hk.pretrained_backbone("mobilenet_v2", weights=None).weights
        if len(w.shape) == 4
    ]
    assert len(torch_stds) == len(keras_stds) == 52
    np.testing.assert_allclose(keras_stds, torch_stds, rtol=0.25)  # sample stds of the same normal distribution
