"""PyTorch: export to deployable formats and their parity (chapter 15). Mirrors `helpers.keras.export`."""

from __future__ import annotations

__all__: list[str] = []
