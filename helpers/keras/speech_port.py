"""A hand-written Keras 3 port of Google's speech-embedding model, reading the weights of the shipped ONNX file.

The ONNX graph (openWakeWord's `embedding_model.onnx`) is a chain: 20 convolutions (kernels 3x3, 1x3 or 3x1; the
1x3 and 3x3 ones zero-pad the mel axis by one on each side, the time axis never), each but the last followed by a
clipped leaky ReLU, max(leaky_relu(x, 0.2), -0.4), and five max-poolings. The `onnx` package reads the graph and
its initializers without importing a framework; an ONNX kernel (out, in, kh, kw) becomes a Keras kernel
(kh, kw, in, out). A pooling keeps the file's window, strides (ONNX's default is 1; Keras' would be the window) and
padding (with -inf, which no maximum picks); ceil_mode, dilations and auto_pad padding are refused. Each pooling
closes a block (a nested Keras model `block_i`); the last block ends with the 96-channel projection. Input: log-mel
windows (76, 32, 1), NHWC.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from helpers.keras.internals import flatten_layers

EMBEDDING_BLOCKS = 5


@keras.saving.register_keras_serializable(package="tl_book")
class ClippedLeakyReLU(layers.Layer):
    """max(leaky_relu(x, slope), floor): the activation of the speech-embedding model (slope 0.2, floor -0.4)."""

    def __init__(self, slope: float = 0.2, floor: float = -0.4, **kwargs):
        super().__init__(**kwargs)
        self.slope, self.floor = float(slope), float(floor)

    def call(self, x):
        return keras.ops.maximum(keras.ops.leaky_relu(x, self.slope), self.floor)

    def get_config(self) -> dict:
        return {**super().get_config(), "slope": self.slope, "floor": self.floor}


@keras.saving.register_keras_serializable(package="tl_book")
class PoolPadding2D(layers.Layer):
    """Pads height and width with -inf, as ONNX MaxPool pads: `pads` is [top, left, bottom, right] (NHWC input)."""

    def __init__(self, pads=(0, 0, 0, 0), **kwargs):
        super().__init__(**kwargs)
        self.pads = tuple(int(p) for p in pads)

    def call(self, x):
        top, left, bottom, right = self.pads
        return keras.ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=float("-inf"))

    def get_config(self) -> dict:
        return {**super().get_config(), "pads": self.pads}


POOL_DEFAULTS = {"ceil_mode": 0, "dilations": [1, 1], "auto_pad": "NOTSET", "storage_order": 0}  # all the port takes


def pool_spec(attributes: dict, name: str = "MaxPool") -> dict:
    """An ONNX MaxPool node's attributes as the port's pool: window, strides and pads [top, left, bottom, right],
    with ONNX's defaults (strides 1, no padding); any other attribute value raises one ValueError."""
    given = {k: v.decode() if isinstance(v, bytes) else v for k, v in attributes.items()}
    size = tuple(int(k) for k in given["kernel_shape"])
    unsupported = {k: given[k] for k, default in POOL_DEFAULTS.items() if k in given and given[k] != default}
    if given.get("auto_pad") == "VALID":  # no padding: what NOTSET with zero pads means
        unsupported.pop("auto_pad")
    if len(size) != 2 or unsupported:
        raise ValueError(
            f"{name}: the Keras port takes 2-D MaxPool with kernel_shape, strides and pads only, and "
            f"{', '.join(f'{k}={v!r}' for k, v in POOL_DEFAULTS.items())}; got kernel_shape={list(size)}"
            + "".join(f", {k}={v!r}" for k, v in unsupported.items())
        )
    strides = tuple(int(s) for s in given.get("strides", (1, 1)))
    pads = tuple(int(p) for p in given.get("pads", (0, 0, 0, 0)))
    return {"kind": "pool", "size": size, "strides": strides, "pads": pads}


def read_onnx(path) -> list[dict]:
    """The graph's layers in order: conv (kernel in Keras layout, bias, mel padding), activation, pool (window,
    strides, pads)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    found, slope = [], None
    for node in graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            kernel = constants[node.input[1]].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
            bias = constants[node.input[2]] if len(node.input) > 2 else None
            pads = list(attributes.get("pads", [0, 0, 0, 0]))  # [top, left, bottom, right]
            if pads[0] or pads[2] or pads[1] != pads[3]:
                raise ValueError(f"unexpected padding {pads} in {node.name}")
            found.append({"kind": "conv", "kernel": kernel, "bias": bias, "pad": pads[1]})
        elif node.op_type == "LeakyRelu":
            slope = attributes["alpha"]
        elif node.op_type == "Max":
            found.append({"kind": "activation", "slope": slope, "floor": float(constants[node.input[1]].item())})
        elif node.op_type == "MaxPool":
            found.append(pool_spec(attributes, node.name))
        elif node.op_type != "Reshape":
            raise ValueError(f"unexpected ONNX operation {node.op_type} in {path}")
    return found


def _layers_of(spec: dict, name: str) -> list:
    """The Keras layers (with their weights once built) of one ONNX layer."""
    if spec["kind"] == "activation":
        return [ClippedLeakyReLU(spec["slope"], spec["floor"], name=f"{name}_act")]
    if spec["kind"] == "pool":
        pad = [PoolPadding2D(spec["pads"], name=f"{name}_pool_pad")] if any(spec["pads"]) else []
        return [*pad, layers.MaxPooling2D(spec["size"], spec["strides"], name=f"{name}_pool")]
    pad = [layers.ZeroPadding2D(((0, 0), (spec["pad"], spec["pad"])), name=f"{name}_pad")] if spec["pad"] else []
    kh, kw, _, filters = spec["kernel"].shape
    conv = layers.Conv2D(filters, (kh, kw), use_bias=spec["bias"] is not None, name=name)
    return [*pad, conv]


def build(path) -> keras.Model:
    """The speech-embedding model with the ONNX file's weights: (76, 32, 1) in, 96 features out."""
    specs = read_onnx(path)
    inputs = keras.Input((76, 32, 1), name="log_mel")
    x, block, convs, blocks_done = inputs, [], [], 0
    for spec in specs:
        if spec["kind"] == "conv":
            convs.append((f"conv_{len(convs) + 1}", spec))
        block.extend(_layers_of(spec, f"conv_{len(convs)}"))
        if spec["kind"] == "pool" and blocks_done < EMBEDDING_BLOCKS - 1:  # each pooling closes a block ...
            blocks_done += 1
            x, block = _block(block, x, f"block_{blocks_done}"), []
    x = _block(block, x, f"block_{EMBEDDING_BLOCKS}")  # ... but the last, which goes with the final projection
    model = keras.Model(inputs, layers.Flatten(name="flatten")(x), name="speech_embedding")
    for name, spec in convs:
        _find(model, name).set_weights([spec["kernel"]] + ([spec["bias"]] if spec["bias"] is not None else []))
    return model


def _block(block_layers: list, x, name: str):
    """A nested model made of `block_layers`, applied to `x`."""
    inputs = keras.Input(x.shape[1:])
    y = inputs
    for layer in block_layers:
        y = layer(y)
    return keras.Model(inputs, y, name=name)(x)


def _find(model: keras.Model, name: str):
    for layer in flatten_layers(model, include_self=False, recursive=True):
        if layer.name == name:
            return layer
    raise KeyError(name)


def weights_match(model: keras.Model, path) -> float:
    """The largest absolute difference between the model's convolution weights and the ONNX file's."""
    specs = [s for s in read_onnx(path) if s["kind"] == "conv"]
    gaps = []
    for number, spec in enumerate(specs, start=1):
        conv = _find(model, f"conv_{number}")
        gaps.append(np.abs(conv.get_weights()[0] - spec["kernel"]).max())
    return float(max(gaps))
