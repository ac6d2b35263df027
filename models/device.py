"""The torch device a trainer's ``--device`` names."""
from __future__ import annotations

DEVICE_HELP = "torch device for the network: auto (CUDA when torch sees a GPU, else cpu), cpu, cuda, cuda:N"


def pick_device(name: str):
    """``auto``: CUDA when torch sees a GPU, else the CPU; otherwise the device named, or a clear
    one-line error when it is not a device or not there."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name}: not a torch device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch sees no CUDA GPU here (torch {torch.__version__})")
    return device
