"""helpers.torch and helpers.keras export the same names with the same signatures."""

import inspect

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
