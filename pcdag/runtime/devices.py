"""Which torch device a process uses: ``auto`` (this process's GPU when CUDA is there, else the CPU), ``cpu``,
``cuda`` (the GPU of ``LOCAL_RANK``, as torchrun sets it; 0 alone) or an explicit ``cuda:N``."""

from __future__ import annotations

import os

import torch


def local_device(name: str = "auto") -> torch.device:
    cuda = torch.cuda.is_available() if name == "auto" else name.startswith("cuda")
    if not cuda:
        return torch.device(name if name != "auto" else "cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}, but torch sees no CUDA device (pcdag doctor says why)")
    return torch.device(name if ":" in name else f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
