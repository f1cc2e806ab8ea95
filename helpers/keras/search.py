"""Keras: hyperparameter search (Optuna trials, pruning) (chapter 13). Mirrors `helpers.torch.search`."""

from __future__ import annotations

__all__: list[str] = []
