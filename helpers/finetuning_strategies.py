"""Checks for fine-tuning strategies (chapter 03): partial unfreezing. The rate factors of discriminative learning
rates are in the base layer `helpers.tuning` (`fit` applies them), the small CNN's blocks in `helpers.models`.

Framework-neutral: imports neither PyTorch nor TensorFlow. `helpers.torch` and `helpers.keras`
read these, so both frameworks check a block count the same way.
"""

from __future__ import annotations

from helpers import checks


def check_num_blocks(num_blocks, depth: int) -> int:
    """Reject a block count outside 0..depth with a message that names the network's depth."""
    return checks.up_to("num_blocks", num_blocks, depth, f" (this network has {depth} blocks)")
