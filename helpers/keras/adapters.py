"""Keras: parameter-efficient fine-tuning (BitFit, LoRA) (chapter 14). Mirrors `helpers.torch.adapters`."""

from __future__ import annotations

__all__: list[str] = []
