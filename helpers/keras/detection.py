"""Object detection (chapter 18), Keras: a pretrained COCO detector for inference and a detector fine-tuned on
constructed scenes.
"""

from __future__ import annotations

__all__: list[str] = []
