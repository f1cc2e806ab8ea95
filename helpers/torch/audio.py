"""Audio (chapter 19), PyTorch: the pretrained speech-embedding model, frozen or fine-tuned, and small heads for spoken
words.
"""

from __future__ import annotations

__all__: list[str] = []
