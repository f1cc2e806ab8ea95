"""PyTorch: parameter-efficient fine-tuning (BitFit, LoRA) (chapter 14). Mirrors `helpers.keras.adapters`."""

from __future__ import annotations

__all__: list[str] = []
