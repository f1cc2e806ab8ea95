"""Chapter 10 (few labels, many unlabelled images): pseudo-labelling and consistency training.

Mirrors the module of the same name in the other framework package (tests/test_parity.py).
"""

__all__: list[str] = []
