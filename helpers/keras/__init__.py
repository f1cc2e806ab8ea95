"""Keras half of the book's helper API: `from helpers import keras as book`.

Every public name here exists in `helpers.torch` with the same signature, in a module of the same name
(tests/test_parity.py holds this), and each chapter's module is named by its slug: `models` (the backbone table,
pretrained networks, heads, freezing), `training` (fit, evaluate, predict, optimizers, schedules, losses),
`finetuning_strategies` (partial unfreezing, discriminative rates, block transfer), `interpretation` (activations,
Grad-CAM), `text_classification` (MiniLM), `few_labels` (pseudo-labels, consistency), `distillation` (soft targets,
shared backbones), `domain_adaptation` (AdaBN, CORAL, DANN), `hyperparameter_search` (hyperparameter trials), `peft`
(BitFit, LoRA), `export` (deployable formats), `fast_training` (fast and data-parallel training), `backbones`
(choosing a pretrained backbone), `detection` (object detection), `audio` (spoken words) and `image_text` (image and
text).
Images come in as NumPy NHWC arrays from `helpers.data`, which is Keras' own layout. `mobilenet_port`
(MobileNetV2 mirroring torchvision layer for layer, so its weights port exactly) is Keras-only.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before Keras is first imported

from helpers import import_tensorflow_quietly, seed  # noqa: E402

import_tensorflow_quietly()  # before any submodule imports Keras: holds back TensorFlow's oneDNN notice
from helpers.keras import (  # noqa: E402
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
from helpers.keras.audio import *  # noqa: E402, F403
from helpers.keras.backbones import *  # noqa: E402, F403
from helpers.keras.detection import *  # noqa: E402, F403
from helpers.keras.distillation import *  # noqa: E402, F403
from helpers.keras.domain_adaptation import *  # noqa: E402, F403
from helpers.keras.export import *  # noqa: E402, F403
from helpers.keras.fast_training import *  # noqa: E402, F403
from helpers.keras.few_labels import *  # noqa: E402, F403
from helpers.keras.finetuning_strategies import *  # noqa: E402, F403
from helpers.keras.hyperparameter_search import *  # noqa: E402, F403
from helpers.keras.image_text import *  # noqa: E402, F403
from helpers.keras.interpretation import *  # noqa: E402, F403
from helpers.keras.models import *  # noqa: E402, F403
from helpers.keras.peft import *  # noqa: E402, F403
from helpers.keras.text_classification import *  # noqa: E402, F403
from helpers.keras.training import *  # noqa: E402, F403

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
