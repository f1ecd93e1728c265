"""Search spaces: the YAML config, backbones, mixed ops, cells, the supernet, and the discrete
network built from a genotype.

- :func:`load_space` reads and validates ``search_spaces/*.yaml`` into a :class:`SearchSpace`;
- :class:`Supernet` is the searchable network (architecture parameters ``arch.<position>``);
- :func:`build_model` builds the discrete network of a :class:`nas_reid.space.genotype.Genotype`.
"""

from nas_reid.space.backbone import (
    BACKBONES,
    POSITIONS,
    BackboneError,
    ResNetBackbone,
    load_backbone_weights,
    stage_shapes,
)
from nas_reid.space.config import (
    OpSpec,
    SearchSpace,
    SpaceError,
    load_space,
)
from nas_reid.space.mixed import STRATEGIES, MixedOp, gumbel_hard_sample
from nas_reid.space.cell import SearchCell, cell_edges
from nas_reid.space.supernet import BNNeck, Supernet
from nas_reid.space.discrete import DiscreteCell, ReIDNet, build_model, inherit_weights

__all__ = [
    "BACKBONES",
    "BNNeck",
    "BackboneError",
    "DiscreteCell",
    "MixedOp",
    "OpSpec",
    "POSITIONS",
    "ReIDNet",
    "ResNetBackbone",
    "STRATEGIES",
    "SearchCell",
    "SearchSpace",
    "SpaceError",
    "Supernet",
    "build_model",
    "cell_edges",
    "gumbel_hard_sample",
    "inherit_weights",
    "load_backbone_weights",
    "load_space",
    "stage_shapes",
]
