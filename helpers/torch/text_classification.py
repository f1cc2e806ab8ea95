"""Language models (PyTorch): the pretrained MiniLM encoder through Hugging Face transformers, tokenized with
the same `tokenizers` tokenizer as the Keras half (chapter 09)."""

from __future__ import annotations

import collections
import time

import numpy as np
import torch
from torch import nn

from helpers import checks, text, tuning
from helpers.metrics import accuracy
from helpers.torch.models import Model, device, freeze, unfreeze
from helpers.torch.training import epoch_line

__all__ = [
    "text_tokenizer",
    "tokenize",
    "text_encoder",
    "text_classifier",
    "encoder_layers",
    "train_top_layers",
    "sentence_embeddings",
    "predict_text",
    "fit_text",
]


def _transformers():
    """transformers, imported on first use, offline (the model comes from the registry) and quiet."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():  # tqdm.auto's "IProgress not found" in notebooks without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def text_tokenizer():
    """The model's WordPiece tokenizer: Hugging Face `tokenizers` reading the model's tokenizer.json."""
    return text.tokenizer()


def tokenize(texts, max_length) -> dict[str, np.ndarray]:
    """Token ids, segment ids and attention masks (N, max_length); longer texts truncated, shorter ones padded."""
    return text.encode(texts, max_length)


def text_encoder() -> Model:
    """The pretrained MiniLM encoder without a head (transformers' AutoModel), in eval mode."""
    return _transformers().AutoModel.from_pretrained(text.model_dir()).eval()


def text_classifier(num_classes, dropout=0.1) -> Model:
    """MiniLM with a new classification head on its pooled [CLS] output: dropout, then one linear layer."""
    num_classes = checks.classes(num_classes)
    return _transformers().AutoModelForSequenceClassification.from_pretrained(
        text.model_dir(), num_labels=num_classes, classifier_dropout=dropout
    )


def text_backbone(model: nn.Module) -> Model:
    """The BERT encoder inside an encoder or a classifier."""
    return getattr(model, "bert", model)


def encoder_layers(model) -> list:
    """The transformer layers of a text encoder or classifier, from input to output."""
    backbone = text_backbone(model)
    if not hasattr(backbone, "encoder"):
        raise ValueError("model has no transformer layers; pass a model from text_encoder or text_classifier")
    return list(backbone.encoder.layer)


def train_top_layers(model, num_layers):
    """Freeze the embeddings and all but the top `num_layers` transformer layers; pooler and head stay trainable."""
    layers = encoder_layers(model)
    num_layers = checks.up_to("num_layers", num_layers, len(layers))
    backbone = text_backbone(model)
    freeze(model)
    for module in layers[len(layers) - num_layers :]:
        unfreeze(module)
    for module in model.children():
        if module is not backbone and model is not backbone:  # the head of a classifier
            unfreeze(module)
    if backbone.pooler is not None:
        unfreeze(backbone.pooler)
    return model


def token_tensors(tokens: dict, rows=slice(None), dev="cpu") -> dict[str, torch.Tensor]:
    """The model's three inputs for `rows`, as int64 tensors on `dev` (what transformers' BERT takes)."""
    return {k: torch.as_tensor(np.asarray(tokens[k][rows]), dtype=torch.long).to(dev) for k in text.TEXT_INPUTS}


def sentence_embeddings(model, tokens, batch_size=64, normalize=True) -> np.ndarray:
    """Mean of the last layer's token vectors over the attention mask (N, hidden), L2-normalised by default."""
    batch_size = checks.count("batch_size", batch_size)
    tokens = text.check_tokens(tokens)
    dev = torch.device(device())
    backbone = text_backbone(model).to(dev).eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(tokens["input_ids"]), batch_size):
            batch = token_tensors(tokens, slice(start, start + batch_size), dev)
            hidden = backbone(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            outputs.append((nn.functional.normalize(mean, dim=-1) if normalize else mean).cpu().numpy())
    return np.concatenate(outputs)


def predict_text(model, tokens, batch_size=64) -> np.ndarray:
    """Class logits (N, classes) of a text classifier for tokenized texts."""
    batch_size = checks.count("batch_size", batch_size)
    tokens = text.check_tokens(tokens)
    dev = torch.device(device())
    model.to(dev).eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(tokens["input_ids"]), batch_size):
            outputs.append(model(**token_tensors(tokens, slice(start, start + batch_size), dev)).logits.cpu().numpy())
    return np.concatenate(outputs)


def _check_text_data(model, data) -> tuple[dict, np.ndarray]:
    tokens, labels = checks.pair(data)
    tokens = text.check_tokens(tokens)
    return tokens, checks.labels(labels, len(tokens["input_ids"]), model.config.num_labels)


def fit_text(model, train, validation=None, epochs=1, lr=5e-5, batch_size=16, warmup=0.1, verbose=True) -> dict:
    """Fine-tune on (tokens, labels): AdamW (no decay on biases and LayerNorm weights), linear warmup then linear
    decay, gradients clipped to norm 1."""
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    tokens, labels = _check_text_data(model, train)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: unfreeze something before fit_text")
    steps = epochs * -(-len(labels) // batch_size)
    dev = torch.device(device())
    model.to(dev)
    groups = [  # decay the weight matrices; biases and LayerNorm weights are excluded
        {"params": [p for p in params if text.decays(p.shape)], "weight_decay": text.WEIGHT_DECAY},
        {"params": [p for p in params if not text.decays(p.shape)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, eps=tuning.ADAM_EPSILON)
    scheduler = _transformers().get_linear_schedule_with_warmup(opt, text.warmup_steps(steps, warmup), steps)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        total_loss = correct = 0.0
        order = torch.randperm(len(labels)).numpy()
        for first in range(0, len(labels), batch_size):
            step_start = time.perf_counter()
            rows = order[first : first + batch_size]
            yb = torch.as_tensor(labels[rows], dtype=torch.long, device=dev)
            logits = model(**token_tensors(tokens, rows, dev)).logits
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, text.CLIP_NORM)
            history["lr"].append(scheduler.get_last_lr()[0])
            opt.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(rows)
            correct += float((logits.argmax(1) == yb).sum())
            history["step_seconds"].append(time.perf_counter() - step_start)
        history["loss"].append(total_loss / len(labels))
        history["accuracy"].append(correct / len(labels))
        history["epoch_seconds"].append(time.perf_counter() - start)
        if validation is not None:
            val_tokens, val_labels = _check_text_data(model, validation)
            logits = predict_text(model, val_tokens, batch_size=max(64, batch_size))
            val_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_labels)))
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(accuracy(val_labels, logits))
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}" + epoch_line({k: v for k, v in history.items() if k != "lr"}))
    return dict(history)
