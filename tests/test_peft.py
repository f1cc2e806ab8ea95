"""Chapter 14's helpers: head only, BitFit, LoRA (peft / keras enable_lora), merging, adapter files, bad input.

Each MiniLM classifier is built once per framework and test (loading takes a second or two); the data are three
short texts, so no test trains for more than one optimizer step.
"""

import importlib
import subprocess
import sys

import numpy as np
import pytest

from helpers import peft as peft_helpers

TEXTS = ["Win a FREE iPhone now!!! Click here", "The meeting moved to 3pm tomorrow.", "patch works for me, thanks"]
HIDDEN, LAYERS, HEADS, HEAD_DIM = 384, 6, 12, 32
HEAD_PARAMS = HIDDEN * 2 + 2  # the linear head for two classes
MODEL_PARAMS = 22_713_216 + HEAD_PARAMS  # MiniLM with its (unused, frozen) pooler, and the head
PROJECTIONS = LAYERS * len(peft_helpers.LORA_TARGETS)  # query and value in each of the six layers


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


def _tokens(book):
    return book.tokenize(TEXTS, max_length=12)


def _lora_params(book, rank: int) -> int:
    """peft factors a 384x384 projection as (384 x r)(r x 384); Keras factors the (384, 12, 32) EinsumDense kernel
    as A (384, 12, r) and B (r, 32): a rank-r update per head, with more parameters for the same `rank`."""
    if book.__name__ == "helpers.torch":
        return PROJECTIONS * rank * (HIDDEN + HIDDEN)
    return PROJECTIONS * (HIDDEN * HEADS * rank + rank * HEAD_DIM)


# ----------------------------------------------------------------------------- neutral


def test_neutral_module_imports_no_framework():
    code = "import sys, helpers.peft; assert not {'torch', 'tensorflow', 'keras'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("rank", [0, -1, 2.5, True, "4", 33])
def test_check_rank_rejects_bad_ranks_with_one_value_error(rank):
    with pytest.raises(ValueError, match="LoRA rank must be an integer from 1 to 32"):
        peft_helpers.check_rank(rank, 32)


def test_training_state_bytes_counts_weights_gradients_and_two_adam_moments():
    state = peft_helpers.training_state_bytes(1000, 10)
    assert state == {"weights": 4000, "gradients": 40, "optimizer state": 80, "total": 4120}
    with pytest.raises(ValueError):
        peft_helpers.training_state_bytes(10, 11)


def test_median_step_seconds_leaves_out_the_warmup_steps():
    assert peft_helpers.median_step_seconds([9.0, 8.0, 1.0, 2.0, 3.0], warmup=2) == 2.0
    with pytest.raises(ValueError, match="warmup"):
        peft_helpers.median_step_seconds([1.0, 2.0], warmup=2)


# ----------------------------------------------------------------------------- both frameworks


def test_trainable_parameters_of_each_method(book):
    counts = {
        "head only": book.count_params(book.train_head_only(book.pooled_text_classifier(2)))["trainable"],
        "BitFit": book.count_params(book.train_biases(book.pooled_text_classifier(2)))["trainable"],
        "LoRA 4": book.count_params(book.add_lora(book.pooled_text_classifier(2), rank=4))["trainable"],
    }
    biases = LAYERS * (4 * HIDDEN + 1536 + HIDDEN + 2 * HIDDEN) + HIDDEN  # linear layers, 2 LayerNorms; embeddings'
    assert counts == {"head only": HEAD_PARAMS, "BitFit": biases + HEAD_PARAMS, "LoRA 4": _lora_params(book, 4) + 770}


def test_lora_starts_at_the_frozen_model_and_merges_exactly(book):
    tokens = _tokens(book)
    book.seed(0)
    plain = book.pooled_text_classifier(2)
    before = book.predict_text(plain, tokens)
    model = book.add_lora(plain, rank=2)
    assert len(book.lora_targets(model)) == PROJECTIONS
    np.testing.assert_allclose(book.predict_text(model, tokens), before, atol=1e-5)  # B = 0: no change at the start
    for layer in book.lora_targets(model).values():  # give B nonzero values, as training would
        _fill_lora_b(book, layer, 0.05)
    adapted = book.predict_text(model, tokens)
    assert np.abs(adapted - before).max() > 1e-3
    merged = book.merge_lora(model)
    assert book.count_params(merged)["total"] == MODEL_PARAMS, "no adapter weights left"
    np.testing.assert_allclose(book.predict_text(merged, tokens), adapted, atol=1e-4)


def _fill_lora_b(book, layer, value):
    if book.__name__ == "helpers.torch":
        import torch

        with torch.no_grad():
            layer.lora_B["default"].weight.fill_(value)
    else:
        layer.lora_kernel_b.assign(np.full(layer.lora_kernel_b.shape, value, dtype="float32"))


def _lora_model_with_moved_b(book):
    """Tokens, a rank-1 LoRA classifier whose B factors are nonzero (so the adapter changes the output), and its
    predictions: what the adapter round-trip tests save and reload."""
    tokens = _tokens(book)
    book.seed(0)
    model = book.add_lora(book.pooled_text_classifier(2), rank=1)
    for layer in book.lora_targets(model).values():
        _fill_lora_b(book, layer, 0.03)
    return tokens, model, book.predict_text(model, tokens)


def test_adapter_file_round_trip_gives_the_same_predictions(book, tmp_path):
    tokens, model, expected = _lora_model_with_moved_b(book)
    path = book.save_adapter(model, tmp_path / "adapter.safetensors")
    assert path.stat().st_size < 4 * (_lora_params(book, 1) + HEAD_PARAMS) + 20_000, "only the trainable weights"
    book.seed(1)  # a different random head and A: loading must overwrite them
    fresh = book.add_lora(book.pooled_text_classifier(2), rank=1)
    assert np.abs(book.predict_text(fresh, tokens) - expected).max() > 1e-4
    np.testing.assert_allclose(book.predict_text(book.load_adapter(fresh, path), tokens), expected, atol=1e-6)
    with pytest.raises(ValueError, match="same method"):
        book.load_adapter(book.train_head_only(book.pooled_text_classifier(2)), path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="never overwrites"):
        book.save_adapter(fresh, path)
    assert path.read_bytes() == before, "the existing file must stay as it was"


def test_add_lora_rejects_bad_ranks_and_leaves_the_model_alone(book):
    model = book.pooled_text_classifier(2)
    before = book.count_params(model)
    for rank in (0, -3, 1.5, True, 10_000):
        with pytest.raises(ValueError, match="LoRA rank must be an integer"):
            book.add_lora(model, rank=rank)
    assert book.count_params(model) == before, "a refused rank changes nothing"


def test_bitfit_step_moves_biases_and_leaves_matrices(book):
    book.seed(0)
    model = book.train_biases(book.pooled_text_classifier(2))
    weights = _named_weights(book, model)
    book.fit_text(model, (_tokens(book), np.array([1, 0, 0])), epochs=1, lr=1e-2, batch_size=3, verbose=False)
    after = _named_weights(book, model)
    moved = {name for name in weights if not np.array_equal(weights[name], after[name])}
    assert moved and all(name.rsplit("/", 1)[-1] in ("bias", "beta") or "classifier" in name for name in moved)
    assert any("query" in name for name in moved), "the attention biases train too"


def _named_weights(book, model) -> dict:
    if book.__name__ == "helpers.torch":
        return {n.replace(".", "/"): p.detach().numpy().copy() for n, p in model.named_parameters()}
    return {f"{i}:{w.path}": np.array(w.numpy()) for i, w in enumerate(model.weights)}


def test_lora_targets_leave_out_the_unused_pooler(book):
    model = book.pooled_text_classifier(2)
    pooler = "pooler" if book.__name__ == "helpers.torch" else "pooled_dense"
    wide = book.lora_targets(model, ("query", "value", "dense", pooler, "pooled_dense"))
    assert len(wide) >= PROJECTIONS and not any(pooler in path for path in wide), "the pooler feeds nothing"
    adapted = book.add_lora(model, rank=1, targets=("query", "key", "value", "dense", "pooled_dense"))
    trainable = _trainable_names(book, adapted)
    assert any("key" in name for name in trainable) and not any(pooler in name for name in trainable)


def _trainable_names(book, model) -> list:
    if book.__name__ == "helpers.torch":
        return [name for name, p in model.named_parameters() if p.requires_grad]
    return [v.path for v in model.trainable_weights]


def test_load_adapter_matches_tensors_by_name_not_by_order(book, tmp_path):
    from safetensors.numpy import load_file, save_file

    tokens, model, expected = _lora_model_with_moved_b(book)
    saved = load_file(str(book.save_adapter(model, tmp_path / "adapter.safetensors")))
    keys = list(saved)[::-1]  # another order, and in Keras other index prefixes: query and value factors trade places
    swapped = {f"{i:04d}:{k.split(':', 1)[1]}" if ":" in k else k: saved[k] for i, k in enumerate(keys)}
    save_file(swapped, str(tmp_path / "swapped.safetensors"))
    book.seed(1)
    fresh = book.add_lora(book.pooled_text_classifier(2), rank=1)
    loaded = book.load_adapter(fresh, tmp_path / "swapped.safetensors")
    np.testing.assert_allclose(book.predict_text(loaded, tokens), expected, atol=1e-6)
    renamed = {k.replace("value", "key"): v for k, v in swapped.items()}
    save_file(renamed, str(tmp_path / "renamed.safetensors"))
    with pytest.raises(ValueError, match="same method"):
        book.load_adapter(book.add_lora(book.pooled_text_classifier(2), rank=1), tmp_path / "renamed.safetensors")


def test_mean_spread_says_n_and_prints_no_spread_for_one_run():
    assert peft_helpers.mean_spread([0.9]) == "0.900 (n=1)"
    assert peft_helpers.mean_spread([0.8, 1.0]) == "0.900 ± 0.141 (n=2)"


def test_conv_lora_adapts_every_1x1_convolution_and_starts_at_the_frozen_model(book):
    book.seed(0)
    backbone = book.pretrained_backbone("mobilenet_v2")
    model = book.add_head(backbone, book.new_head(book.feature_dim(backbone), 10))
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    before = book.predict(model, images)
    convs = book.pointwise_convs(model)
    sides = [_conv_sides(book, layer) for layer in convs.values()]
    assert len(convs) == 34 and all(min(s) >= 16 for s in sides), "MobileNetV2's 34 pointwise convolutions"
    adapted = book.add_conv_lora(model, rank=2)
    head = book.feature_dim(backbone) * 10 + 10
    assert book.count_params(adapted)["trainable"] == sum(2 * (c_in + c_out) for c_in, c_out in sides) + head
    np.testing.assert_allclose(book.predict(adapted, images), before, atol=1e-5)  # B = 0
    with pytest.raises(ValueError, match="LoRA rank must be an integer"):
        book.add_conv_lora(book.add_head(backbone, book.new_head(1280, 10)), rank=1000)


def _conv_sides(book, layer) -> tuple:
    if book.__name__ == "helpers.torch":
        return layer.in_channels, layer.out_channels
    return int(layer.kernel.shape[2]), layer.filters


def test_keras_backbone_saves_and_loads_the_lora_factors_of_add_lora(tmp_path):
    book = importlib.import_module("helpers.keras")
    book.seed(0)
    model = book.add_lora(book.pooled_text_classifier(2), rank=2)
    for layer in book.lora_targets(model).values():
        _fill_lora_b(book, layer, 0.02)
    backbone = next(layer for layer in model.layers if hasattr(layer, "save_lora_weights"))  # keras-hub's backbone
    backbone.save_lora_weights(str(tmp_path / "spam.lora.h5"))
    fresh = book.add_lora(book.pooled_text_classifier(2), rank=2)
    next(layer for layer in fresh.layers if hasattr(layer, "load_lora_weights")).load_lora_weights(
        str(tmp_path / "spam.lora.h5")
    )
    for a, b in zip(book.lora_targets(model).values(), book.lora_targets(fresh).values(), strict=True):
        np.testing.assert_array_equal(a.lora_kernel_b.numpy(), b.lora_kernel_b.numpy())
        np.testing.assert_array_equal(a.lora_kernel_a.numpy(), b.lora_kernel_a.numpy())
