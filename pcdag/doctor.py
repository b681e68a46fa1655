"""``pcdag doctor``: what this machine offers pcdag — Python, torch, CUDA, GPUs, optional backends."""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys

OPTIONAL = {
    "spconv": "sparse convolution on the GPU (the CPU build does forward only; CPU training uses the torch backend)",
    "pycolmap": "structure-from-motion reconstruction of plain video",
    "av": "PyAV, video decoding",
    "distributed": "Dask distributed, the offline executor",
    "zarr": "the scene store",
    "numcodecs": "store compression (Blosc/Zstd)",
}


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # installed but broken: say so
        return f"installed but fails to import: {type(exc).__name__}: {exc}"
    return str(getattr(mod, "__version__", "installed"))


def report() -> str:
    lines = [f"python    {sys.version.split()[0]} ({platform.platform()})"]
    try:
        import torch

        lines.append(f"torch     {torch.__version__}")
        if torch.cuda.is_available():
            lines.append(f"cuda      {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)")
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                lines.append(f"  gpu {i}   {torch.cuda.get_device_name(i)}, compute capability {major}.{minor}")
        else:
            lines.append("cuda      not available (CPU only)")
    except ImportError:
        lines.append("torch     not installed (pip install torch==2.13.0 gives the CPU build)")
    lines.append("optional backends:")
    for module, what in OPTIONAL.items():
        version = _version(module)
        state = (
            f"usable ({version})"
            if version and not version.startswith("installed but")
            else (version or "not installed")
        )
        lines.append(f"  {module:<11} {state:<32} {what}")
    return "\n".join(lines)
