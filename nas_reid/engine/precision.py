"""Mixed precision: bf16 autocast and channels_last, for retraining and for the search.

Configured as ``precision`` in a training recipe and as ``schedule.precision`` in a search
space::

    precision: {bf16: auto, channels_last: auto}   # auto: on CUDA only; true / false: always / never

Under ``bf16`` the forward passes run in ``torch.autocast(..., dtype=torch.bfloat16)``; the
network outputs are cast back with ``.float()`` before the losses. Weights, gradients and
optimizer states stay float32 (no loss scaling). ``channels_last`` keeps the 4-D weights and
images in NHWC order. Both are on by default on CUDA only (``auto``); ``true`` on a CPU is
allowed (the tests do), with a :class:`SlowPrecisionWarning` on an x86 CPU without bfloat16
instructions, where bf16 is emulated and far slower than float32.
Why, and the bf16 measurements on a CPU: docs/search.md, section `nas_reid.engine.precision`.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from nas_reid.errors import UserError


class PrecisionConfig(BaseModel):
    """``bf16`` and ``channels_last``: ``auto`` (on CUDA only), true or false."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    bf16: Literal["auto"] | bool = "auto"
    channels_last: Literal["auto"] | bool = "auto"


class SlowPrecisionWarning(UserWarning):
    """bf16 on a CPU without bfloat16 instructions: it works, emulated, far slower than float32."""


def native_bf16(cpuinfo: str) -> bool | None:
    """Whether ``/proc/cpuinfo``'s text names an x86 bfloat16 instruction set (``avx512_bf16``
    or ``amx_bf16``); None when it has no x86 ``flags`` line (another processor)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool({"avx512_bf16", "amx_bf16"} & set(line.partition(":")[2].split()))
    return None


@functools.cache
def cpu_has_native_bf16() -> bool | None:
    """:func:`native_bf16` of this machine; None where ``/proc/cpuinfo`` cannot be read."""
    try:
        return native_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None


def _on(flag: bool | str, device_type: str) -> bool:
    return device_type == "cuda" if flag == "auto" else bool(flag)


@dataclass(frozen=True)
class Precision:
    """The precision settings resolved for one device (:meth:`resolve`)."""

    bf16: bool = False
    channels_last: bool = False

    @classmethod
    def settings(cls, config: PrecisionConfig, device_type: str) -> "Precision":
        """``auto`` resolved for a device type, without :meth:`resolve`'s checks of the device."""
        return cls(bf16=_on(config.bf16, device_type),
                   channels_last=_on(config.channels_last, device_type))

    @classmethod
    def resolve(cls, config: PrecisionConfig, device: torch.device,
                where: str = "precision") -> "Precision":
        """Resolve ``auto`` for ``device``; a GPU without bfloat16 support refuses ``bf16``
        (:class:`~nas_reid.errors.UserError` naming ``where``); a CPU without bfloat16
        instructions warns (:class:`SlowPrecisionWarning`)."""
        bf16 = _on(config.bf16, device.type)
        if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"{where}.bf16: this GPU does not support bfloat16; set it to false")
        if bf16 and device.type == "cpu" and cpu_has_native_bf16() is False:
            warnings.warn(f"{where}.bf16 is on, but this CPU has no bfloat16 instructions (no "
                          "avx512_bf16 or amx_bf16): bf16 is emulated and far slower than "
                          f"float32 here; set {where}.bf16=false", SlowPrecisionWarning,
                          stacklevel=2)
        return cls.settings(config, device.type)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """``torch.bfloat16`` under bf16, else None (the ``autocast`` argument of
        :func:`nas_reid.evaluation.features.extract`)."""
        return torch.bfloat16 if self.bf16 else None

    def autocast(self, device_type: str) -> ContextManager:
        """The context the forward passes run in."""
        if self.bf16:
            return torch.autocast(device_type, dtype=torch.bfloat16)
        return nullcontext()

    def model(self, net: nn.Module) -> nn.Module:
        """``net`` in channels_last when on (in place for the parameters, as ``.to`` is)."""
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images in channels_last when on."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def as_dict(self) -> dict[str, bool]:
        return {"bf16": self.bf16, "channels_last": self.channels_last}
