"""Candidate operations, one module per family, registered by name.

Importing this package registers every op (``basic``, ``channel``, ``rga``, ``dcs``); build them with
:func:`build_op` and list them with :func:`available_ops`.
"""

from nas_reid.ops import basic, channel, dcs, rga  # noqa: F401  (imported to register the ops)
from nas_reid.ops.registry import (
    OpCost,
    OpError,
    available_ops,
    build_op,
    cached_op_cost,
    op_cost,
    op_params,
    register_op,
)

__all__ = [
    "OpCost",
    "OpError",
    "available_ops",
    "build_op",
    "cached_op_cost",
    "op_cost",
    "op_params",
    "register_op",
]
