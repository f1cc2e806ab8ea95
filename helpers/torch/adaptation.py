"""Chapter 12 (domain adaptation): AdaBN, CORAL, DANN's gradient reversal.

Mirrors the module of the same name in the other framework package (tests/test_parity.py).
"""

__all__: list[str] = []
