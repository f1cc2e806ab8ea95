"""PyTorch half of the book's helper API: `from helpers import torch as book`.

Every public name here exists in `helpers.keras` with the same signature, in a module of the same name
(tests/test_parity.py holds this): `models` (the backbone table, pretrained networks, heads, freezing),
`training` (fit, evaluate, predict, optimizers, schedules, losses), `finetuning` (partial unfreezing,
discriminative rates, block transfer), `inspection` (activations, Grad-CAM), `language` (MiniLM),
`semisupervised` (pseudo-labels, consistency), `distillation` (soft targets, shared backbones),
`adaptation` (AdaBN, CORAL, DANN), `search` (hyperparameter trials), `adapters` (BitFit,
LoRA), `export` (deployable formats), `speed` (fast and data-parallel training), `backbones` (choosing a
pretrained backbone), `detection` (object detection), `audio` (spoken words) and `multimodal` (image and text).
Images come in as NumPy NHWC arrays from `helpers.data`; they become NCHW tensors on the model's device
only when a batch is needed. `convert` (torchvision weights to safetensors for the Keras port) is PyTorch-only.
"""

from helpers import seed
from helpers.torch import (
    adaptation,
    adapters,
    audio,
    backbones,
    detection,
    distillation,
    export,
    finetuning,
    inspection,
    language,
    models,
    multimodal,
    search,
    semisupervised,
    speed,
    training,
)
from helpers.torch.adaptation import *  # noqa: F403
from helpers.torch.adapters import *  # noqa: F403
from helpers.torch.audio import *  # noqa: F403
from helpers.torch.backbones import *  # noqa: F403
from helpers.torch.detection import *  # noqa: F403
from helpers.torch.distillation import *  # noqa: F403
from helpers.torch.export import *  # noqa: F403
from helpers.torch.finetuning import *  # noqa: F403
from helpers.torch.inspection import *  # noqa: F403
from helpers.torch.language import *  # noqa: F403
from helpers.torch.models import *  # noqa: F403
from helpers.torch.multimodal import *  # noqa: F403
from helpers.torch.search import *  # noqa: F403
from helpers.torch.semisupervised import *  # noqa: F403
from helpers.torch.speed import *  # noqa: F403
from helpers.torch.training import *  # noqa: F403

MODULES = (
    models,
    training,
    finetuning,
    inspection,
    language,
    semisupervised,
    distillation,
    adaptation,
    search,
    adapters,
    export,
    speed,
    backbones,
    detection,
    audio,
    multimodal,
)
__all__ = ["seed", *(name for module in MODULES for name in module.__all__)]
