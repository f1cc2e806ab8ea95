"""Keras: export to deployable formats and their parity (chapter 15). Mirrors `helpers.torch.export`."""

from __future__ import annotations

__all__: list[str] = []
