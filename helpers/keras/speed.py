"""Keras: fast and data-parallel fine-tuning (chapter 16). Mirrors `helpers.torch.speed`."""

from __future__ import annotations

__all__: list[str] = []
