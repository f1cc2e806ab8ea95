"""helpers.torch and helpers.keras: mirrored modules that export the same names with the same signatures,
and framework-neutral modules that import neither framework."""

import importlib
import inspect
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

import helpers
from helpers import keras as hk
from helpers import torch as ht

FRAMEWORK_ONLY = {
    "helpers.torch.convert",
    "helpers.keras.mobilenet_port",
    "helpers.keras.efficientnet_port",
    "helpers.keras.speech_port",
    "helpers.keras.internals",  # Keras' and TensorFlow's private API, in one place
    "helpers.torch.efficientnet",  # builds EfficientNet-Lite0 from its PyTorch package; Keras ports it instead
}  # weight porting, one side by nature
SCRIPTS = {"data_parallel_train"}  # chapter 16's training scripts: run by torchrun or python, never imported


def _submodules(package) -> set[str]:
    return {info.name for info in pkgutil.iter_modules(package.__path__)}


def test_the_two_packages_have_the_same_module_files():
    only = {f"helpers.torch.{m}" for m in _submodules(ht) - _submodules(hk)}
    only |= {f"helpers.keras.{m}" for m in _submodules(hk) - _submodules(ht)}
    assert only == FRAMEWORK_ONLY, f"modules on one side only: {sorted(only - FRAMEWORK_ONLY)}"


@pytest.mark.parametrize("module", sorted(_submodules(ht) & _submodules(hk) - SCRIPTS))
def test_each_module_pair_exports_the_same_names(module):
    torch_module, keras_module = (importlib.import_module(f"helpers.{fw}.{module}") for fw in ("torch", "keras"))
    assert torch_module.__all__ == keras_module.__all__
    assert all(callable(getattr(m, name)) for m in (torch_module, keras_module) for name in m.__all__)


def test_the_packages_reexport_every_module_name_once():
    for package in (ht, hk):
        names = [name for module in package.MODULES for name in module.__all__]
        assert len(names) == len(set(names)), f"{package.__name__}: a name is exported by two modules"
        assert sorted(package.__all__) == sorted(["seed", *names])
    assert ht.__all__ == hk.__all__


def _shape(function):
    """Parameter names, kinds, defaults and annotations, and the return annotation (strings, as written)."""
    signature = inspect.signature(function)
    parameters = [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]
    return parameters, signature.return_annotation


@pytest.mark.parametrize("name", ht.__all__)
def test_same_signature_and_annotations(name):
    torch_function, keras_function = getattr(ht, name), getattr(hk, name)
    assert _shape(torch_function) == _shape(keras_function), (
        f"{name}: {inspect.signature(torch_function)} vs {inspect.signature(keras_function)}"
    )


def test_every_public_helper_has_a_docstring():
    for module in (ht, hk):
        missing = [name for name in module.__all__ if not (getattr(module, name).__doc__ or "").strip()]
        assert not missing, f"{module.__name__}: no docstring for {missing}"


def _neutral_modules() -> list[str]:
    """Every module of `helpers` outside the two framework packages, found on disk, not listed by hand."""
    return sorted(
        f"helpers.{info.name}" for info in pkgutil.iter_modules(helpers.__path__) if info.name not in ("torch", "keras")
    )


def test_neutral_modules_are_discovered():
    assert {"helpers.config", "helpers.checks", "helpers.data", "helpers.registry"} <= set(_neutral_modules())


@pytest.mark.parametrize("module", _neutral_modules())
def test_neutral_module_imports_no_framework(module):
    """Imported in a fresh interpreter, a neutral module pulls in neither PyTorch nor TensorFlow/Keras."""
    frameworks = ("torch", "torchvision", "tensorflow", "keras", "keras_hub", "transformers")
    code = f"import sys, {module}; print(','.join(m for m in {frameworks!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert not loaded, f"{module} imports {loaded}"


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
