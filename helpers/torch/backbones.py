"""Choosing a pretrained backbone (chapter 17), PyTorch: EfficientNet-Lite0 beside MobileNetV2, and the cost of each
backbone (parameters, time, memory).
"""

from __future__ import annotations

__all__: list[str] = []
