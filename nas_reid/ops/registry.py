"""Registry of candidate operations: op name -> factory, plus cost accounting.

Every op is built as ``factory(channels, height, width, *, **params)`` and maps a
``(B, channels, height, width)`` tensor to the same shape. A factory declares its parameters as
keyword-only arguments with defaults; :func:`build_op` checks the names against that signature
and the value types against the defaults' types, and the factory checks the values themselves
(raising :class:`OpError` through :func:`check_param`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas_reid.errors import UserError

Factory = Callable[..., nn.Module]

_REGISTRY: dict[str, Factory] = {}
_POSITIONAL = ("channels", "height", "width")


class OpError(UserError):
    """An unknown op name, a bad op parameter or an input the op was not built for."""


@dataclass(frozen=True)
class OpCost:
    """Size of an op built for one input size.

    ``params``: number of parameter elements (trainable or not; buffers such as BatchNorm
    running statistics are not counted). ``flops``: floating-point operations of one forward
    pass on one image, counting a multiply-accumulate as 2 FLOPs.
    """

    params: int
    flops: int


def register_op(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(channels, height, width, *, param=default, ...)``."""

    def decorate(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"op {name!r} is registered twice")
        sig = inspect.signature(factory)
        params = list(sig.parameters.values())
        head = tuple(p.name for p in params[:3])
        if head != _POSITIONAL or any(p.kind is p.KEYWORD_ONLY for p in params[:3]):
            raise TypeError(f"op {name!r}: factory must start with (channels, height, width)")
        for p in params[3:]:
            if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
                raise TypeError(
                    f"op {name!r}: parameter {p.name!r} must be keyword-only with a default"
                )
        _REGISTRY[name] = factory
        return factory

    return decorate


def available_ops() -> list[str]:
    """Names of all registered ops, sorted."""
    return sorted(_REGISTRY)


def op_params(name: str) -> dict[str, Any]:
    """The parameters op ``name`` accepts, with their defaults."""
    sig = inspect.signature(_lookup(name))
    return {p.name: p.default for p in list(sig.parameters.values())[3:]}


def check_param(op: str, param: str, value: Any, ok: bool, expected: str) -> None:
    """Raise :class:`OpError` naming ``op`` and ``param`` unless ``ok``."""
    if not ok:
        raise OpError(f"op {op!r}: parameter {param!r} must be {expected}, got {value!r}")


def build_op(name: str, channels: int, height: int, width: int, **params: Any) -> nn.Module:
    """Build op ``name`` for inputs of shape ``(B, channels, height, width)``."""
    factory = _lookup(name)
    for key, value in zip(_POSITIONAL, (channels, height, width)):
        check_param(name, key, value, _is_int(value) and value > 0, "a positive integer")
    accepted = op_params(name)
    for key, value in params.items():
        if key not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise OpError(f"op {name!r}: unknown parameter {key!r} (accepted: {known})")
        _check_type(name, key, value, accepted[key])
    return factory(channels, height, width, **params)


def op_cost(
    module_or_name: nn.Module | str, channels: int, height: int, width: int, **params: Any
) -> OpCost:
    """Parameter count and forward FLOPs of an op at input size ``(1, channels, height, width)``.

    ``module_or_name`` is a built module (``params`` must then be empty) or an op name, built
    here with ``params``. FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`
    on one batch-1 forward in eval mode: it counts matrix products and convolutions (2 FLOPs per
    multiply-accumulate) and ignores element-wise work (BatchNorm, activations, sigmoid gating,
    pooling, additions), which is the usual convention for reporting network FLOPs. The count is
    that of the code as implemented (for RGA: the factorised relation embedding, see
    :mod:`nas_reid.ops.rga`).
    """
    if isinstance(module_or_name, str):
        module = build_op(module_or_name, channels, height, width, **params)
    elif params:
        raise OpError("op_cost: pass parameters only together with an op name")
    else:
        module = module_or_name
    n_params = sum(p.numel() for p in module.parameters())
    first = next(module.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    x = torch.zeros(1, channels, height, width, device=device, dtype=dtype)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        module.train(was_training)
    return OpCost(params=int(n_params), flops=int(counter.get_total_flops()))


@lru_cache(maxsize=1024)
def cached_op_cost(op: str, channels: int, height: int, width: int,
                   params: tuple[tuple[str, Any], ...] = ()) -> tuple[int, int]:
    """``(parameters, FLOPs)`` of :func:`op_cost` for an op name and sorted ``(key, value)``
    parameter pairs, remembered; the global RNG is left as it was (building an op draws its
    initial weights)."""
    with torch.random.fork_rng(devices=[]):
        cost = op_cost(op, channels, height, width, **dict(params))
    return cost.params, cost.flops


def _lookup(name: str) -> Factory:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise OpError(f"unknown op {name!r}; known ops: {', '.join(available_ops())}")
    return _REGISTRY[name]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(op: str, key: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        check_param(op, key, value, isinstance(value, bool), "a bool")
    elif isinstance(default, int):
        check_param(op, key, value, _is_int(value), "an integer")
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        check_param(op, key, value, ok, "a number")
    elif isinstance(default, str):
        check_param(op, key, value, isinstance(value, str), "a string")
