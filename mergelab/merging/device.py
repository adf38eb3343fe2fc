"""Which torch device to compute on."""

from __future__ import annotations

import torch

from ..io.errors import LoadError


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA when present unless told otherwise; a clear error for an unavailable request."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(requested)
    except (RuntimeError, TypeError):
        raise LoadError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise LoadError(f"device {requested!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LoadError(
            "--device cuda was requested but no CUDA GPU is available (torch "
            f"{torch.__version__} sees none); use --device cpu"
        )
    return dev
