"""Chapter 11 (knowledge distillation and parameter sharing): soft targets, distillation training, shared backbones.

Mirrors the module of the same name in the other framework package (tests/test_parity.py).
"""

__all__: list[str] = []
