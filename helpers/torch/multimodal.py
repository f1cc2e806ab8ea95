"""Image and text together (chapter 20), PyTorch: two frozen towers joined by trained projections, a contrastive loss,
zero-shot classification and retrieval.
"""

from __future__ import annotations

__all__: list[str] = []
