"""Convert torchvision's MobileNetV2 checkpoint to safetensors for the Keras port.

Run as `python -m helpers.torch.convert IN.pth OUT.safetensors` (the registry does this in a
subprocess, so a Keras notebook never imports PyTorch). Tensors keep torch's names and
layouts; `helpers.keras.mobilenet_port` transposes them while loading.
"""

import sys


def convert(src: str, dst: str) -> None:
    """Re-save a torch state dict (loaded with weights_only=True) as safetensors."""
    import torch
    from safetensors.numpy import save_file

    state = torch.load(src, map_location="cpu", weights_only=True)
    arrays = {k: v.numpy().copy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(arrays, dst)


if __name__ == "__main__":
    convert(*sys.argv[1:3])
