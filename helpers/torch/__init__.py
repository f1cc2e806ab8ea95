"""PyTorch half of the book's helper API: `from helpers import torch as book`.

Every public name here exists in `helpers.keras` with the same signature, in a module of the same name
(tests/test_parity.py holds this), and each chapter's module is named by its slug: `models` (the backbone table,
pretrained networks, heads, freezing), `training` (fit, evaluate, predict, optimizers, schedules, losses),
`finetuning_strategies` (partial unfreezing, discriminative rates, block transfer), `interpretation` (activations,
Grad-CAM), `text_classification` (MiniLM), `few_labels` (pseudo-labels, consistency), `distillation` (soft targets,
shared backbones), `domain_adaptation` (AdaBN, CORAL, DANN), `hyperparameter_search` (hyperparameter trials), `peft`
(BitFit, LoRA), `export` (deployable formats), `fast_training` (fast and data-parallel training), `backbones`
(choosing a pretrained backbone), `detection` (object detection), `audio` (spoken words) and `image_text` (image and
text).
Images come in as NumPy NHWC arrays from `helpers.data`; they become NCHW tensors on the model's device
only when a batch is needed. `convert` (torchvision weights to safetensors for the Keras port) is PyTorch-only.
"""

from helpers import seed
from helpers.torch import (
    audio,
    backbones,
    detection,
    distillation,
    domain_adaptation,
    export,
    fast_training,
    few_labels,
    finetuning_strategies,
    hyperparameter_search,
    image_text,
    interpretation,
    models,
    peft,
    text_classification,
    training,
)
from helpers.torch.audio import *  # noqa: F403
from helpers.torch.backbones import *  # noqa: F403
from helpers.torch.detection import *  # noqa: F403
from helpers.torch.distillation import *  # noqa: F403
from helpers.torch.domain_adaptation import *  # noqa: F403
from helpers.torch.export import *  # noqa: F403
from helpers.torch.fast_training import *  # noqa: F403
from helpers.torch.few_labels import *  # noqa: F403
from helpers.torch.finetuning_strategies import *  # noqa: F403
from helpers.torch.hyperparameter_search import *  # noqa: F403
from helpers.torch.image_text import *  # noqa: F403
from helpers.torch.interpretation import *  # noqa: F403
from helpers.torch.models import *  # noqa: F403
from helpers.torch.peft import *  # noqa: F403
from helpers.torch.text_classification import *  # noqa: F403
from helpers.torch.training import *  # noqa: F403

MODULES = (
    models,
    training,
    finetuning_strategies,
    interpretation,
    text_classification,
    few_labels,
    distillation,
    domain_adaptation,
    hyperparameter_search,
    peft,
    export,
    fast_training,
    backbones,
    detection,
    audio,
    image_text,
)
__all__ = ["seed", *(name for module in MODULES for name in module.__all__)]
