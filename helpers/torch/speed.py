"""PyTorch: fast and data-parallel fine-tuning (chapter 16). Mirrors `helpers.keras.speed`."""

from __future__ import annotations

__all__: list[str] = []
