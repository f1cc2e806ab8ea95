"""Audio (chapter 19), Keras: the pretrained speech-embedding model, frozen or fine-tuned, and small heads for spoken
words.

The model is Google's speech-embedding network (Apache-2.0), ported by hand to Keras (`helpers.keras.speech_port`)
and given the weights of the ONNX file that openWakeWord ships, read with the `onnx` package. It has five blocks
(nested Keras models `block_1` ... `block_5`) and a flatten, like the PyTorch version. Inputs are the log-mel
windows of `helpers.audio.model_input`, NHWC NumPy arrays (clips, 76, 32, 1).
"""

from __future__ import annotations

import keras

from helpers import audio, registry
from helpers.keras import speech_port
from helpers.keras.models import Model, freeze, unfreeze

__all__ = ["speech_embedding", "split_embedding", "speech_classifier"]

EMBEDDING_BLOCKS = speech_port.EMBEDDING_BLOCKS


def speech_embedding() -> Model:
    """Google's pretrained speech-embedding model: log-mel windows (clips, 76, 32, 1) in, 96 features out.

    The hand-written Keras port with the weights of the registry's ONNX file; five blocks and a flatten, all
    weights trainable."""
    return speech_port.build(registry.fetch("speech-embedding_model"))


def split_embedding(embedding: Model, trainable_blocks: int = 1) -> tuple[Model, Model]:
    """The embedding cut into a lower part (frozen: run it once and cache its outputs, NHWC) and an upper part of
    the last `trainable_blocks` blocks plus the flatten (trainable). Both share the embedding's weights."""
    trainable_blocks = audio.check_trainable_blocks(trainable_blocks)
    names = [f"block_{i + 1}" for i in range(EMBEDDING_BLOCKS)]
    try:
        blocks = [embedding.get_layer(name) for name in names]
    except ValueError:
        raise ValueError(
            "split_embedding takes the model from speech_embedding() (five blocks and a flatten)"
        ) from None
    cut = EMBEDDING_BLOCKS - trainable_blocks
    lower = _chain(blocks[:cut], embedding.input.shape[1:], "lower", keras.layers.Identity())
    upper = _chain(blocks[cut:], lower.output.shape[1:], "upper", keras.layers.Flatten())
    return freeze(lower), unfreeze(upper)


def _chain(blocks: list, input_shape: tuple, name: str, last) -> Model:
    """A functional model: the given blocks in order, then `last`."""
    inputs = keras.Input(input_shape)
    x = inputs
    for block in blocks:
        x = block(x)
    return keras.Model(inputs, last(x), name=name)


def speech_classifier(embedding: Model, head: Model, mean, std) -> Model:
    """Log-mel windows in, class logits out: the embedding (or its upper part), the fixed standardisation of its
    96 features with the training set's `mean` and `std`, and the head trained on standardised features."""
    mean, std = audio.check_statistics(mean, std)
    inputs = keras.Input(embedding.input.shape[1:], name="log_mel")
    # Rescaling, not Normalization: (x - mean) / std as x * (1 / std) - mean / std. tf2onnx (under model.export's
    # ONNX route) turns Normalization's statistics into extra graph inputs instead of constants (chapters 15, 19)
    standardize = keras.layers.Rescaling(scale=1.0 / std, offset=-mean / std, name="standardize")
    return keras.Model(inputs, head(standardize(embedding(inputs))), name="speech_classifier")
