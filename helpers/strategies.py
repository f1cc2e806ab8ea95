"""Settings and checks for fine-tuning strategies: partial unfreezing, discriminative learning rates, the small CNN.

Framework-neutral: imports neither PyTorch nor TensorFlow. `helpers.torch` and `helpers.keras`
read these, so both frameworks build the same small CNN and give each block the same rate
(chapters 03 and 04).
"""

from __future__ import annotations

from helpers import checks

# The small CNN of chapter 04: one block per entry, (output channels, 2x2 max-pool after it).
# 28x28 inputs shrink to 14, 7, 3 and 3 pixels; global average pooling then gives SMALL_CNN_BLOCKS[-1][0] features.
SMALL_CNN_BLOCKS = ((16, True), (32, True), (64, True), (128, False))
BN_EPSILON = 1e-5  # PyTorch's default; Keras layers are given the same value
BN_MOMENTUM = 0.9  # Keras' convention for PyTorch's momentum=0.1


def check_num_blocks(num_blocks, depth: int) -> int:
    """Reject a block count outside 0..depth with a message that names the network's depth."""
    return checks.up_to("num_blocks", num_blocks, depth, f" (this network has {depth} blocks)")


def check_decay(block_lr_decay) -> None:
    """`block_lr_decay` is None (one rate for all) or a factor in (0, 1]."""
    if block_lr_decay is None:
        return
    if isinstance(block_lr_decay, bool) or not isinstance(block_lr_decay, int | float) or not 0 < block_lr_decay <= 1:
        raise ValueError(
            "block_lr_decay must be a number in (0, 1] (each block below the head trains at that factor times "
            f"the rate of the block above it) or None, got {block_lr_decay!r}"
        )


def block_factors(depth: int, block_lr_decay: float | None) -> list[float]:
    """Rate factor of each of `depth` blocks, input to output: decay**k for the block k levels below the head."""
    check_decay(block_lr_decay)
    decay = 1.0 if block_lr_decay is None else float(block_lr_decay)
    return [decay ** (depth - i) for i in range(depth)]
