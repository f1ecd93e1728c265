"""The tiny configurations the training tests share: a one-or-two-cell search space and a
genotype, both at 64x32 on the ``resnet_tiny`` backbone (ResNet-18's stages, one block each, a
quarter as wide: the backbone is not what these tests test) unless told ``backbone="resnet18"``,
and a tiny pretraining set and recipe (the benchmark itself is the ``data_root`` / ``dataset``
fixtures of ``conftest.py``)."""

from __future__ import annotations

from nas_reid.data.synthreid import SynthConfig
from nas_reid.space.genotype import Genotype

BACKBONE = "resnet_tiny"
"""The fixed backbone of :func:`tiny_space` and :func:`tiny_genotype` unless told otherwise."""

PRETRAIN_SET = SynthConfig(seed=5, ids=24, train_ids=20, cameras=3, images_per_id=4, height=64,
                           width=32)
"""A tiny pretraining set (20 training identities x 4 images), disjoint from synthreid."""
PRETRAIN_RECIPE = {"name": "tiny_pretrain", "epochs": 2, "batch": {"p": 4, "k": 4},
                   "lr_schedule": {"warmup_epochs": 1, "milestones": []}, "eval": {"every": 0}}
"""Two epochs of PK 4x4: what ``backbone.weights: synthetic`` pretrains in the tests."""


def tiny_space(*, name: str = "tiny", nodes: int = 1, backbone: str = BACKBONE,
               **schedule) -> dict:
    """Cells after layer3 and layer4 (``nodes`` each) of ``backbone`` (last stride 1), three
    candidates, gumbel, two epochs of PK 2x4; ``schedule`` entries replace the schedule's."""
    space = {
        "name": name,
        "input": {"height": 64, "width": 32},
        "backbone": {"name": backbone, "last_stride": 1},
        "cells": {"positions": ["layer3", "layer4"], "nodes": nodes, "edges_per_node": 1},
        "ops": ["identity", {"name": "se", "params": {"reduction": 8}}, "eca"],
        "sampling": {"strategy": "gumbel", "tau": {"start": 5.0, "end": 0.5}},
        "schedule": {"epochs": 2, "warmup_epochs": 0, "batch": {"p": 2, "k": 4},
                     "weights": {"lr": 0.05}, "arch": {"lr": 0.01}},
    }
    space["schedule"].update(schedule)
    return space


def tiny_genotype(ops=(("layer4", "se", {"reduction": 8}),), *,
                  backbone: str = BACKBONE) -> Genotype:
    """A hand-written genotype on ``backbone`` (last stride 1): one one-node cell per
    ``(position, op, params)``."""
    return Genotype.from_dict({
        "schema": "nas-reid/genotype", "version": 1,
        "space": {"name": None, "hash": None},
        "input": {"height": 64, "width": 32},
        "backbone": {"name": backbone, "last_stride": 1, "choices": {}},
        "cells": [{"position": pos, "nodes": 1,
                   "edges": [{"source": 0, "target": 1, "op": op, "params": params}]}
                  for pos, op, params in ops],
    })


def tiny_mobile_space(*, name: str = "tiny_mobile", cost: dict | None = None, **schedule) -> dict:
    """A searchable mobile backbone at 64x32: four small stages (one per layer) with width,
    kernel, expansion and skip choices, cells after layer3 and layer4; two epochs of PK 2x4."""
    space = {
        "name": name,
        "input": {"height": 64, "width": 32},
        "backbone": {"name": "mobilenetv2", "last_stride": 1, "mobile": {
            "stem": 8, "head": 32, "divisor": 4,
            "stages": [
                {"name": "s1", "layer": "layer1", "channels": 8, "blocks": 1, "stride": 2,
                 "width": [1.0], "kernel": [3], "expansion": [1], "skip": False},
                {"name": "s2", "layer": "layer2", "channels": 16, "blocks": 2, "stride": 2},
                {"name": "s3", "layer": "layer3", "channels": 16, "blocks": 3, "stride": 2},
                {"name": "s4", "layer": "layer4", "channels": 24, "blocks": 2, "stride": 2},
            ],
            "choices": {"width": [0.5, 1.0], "kernel": [3, 5], "expansion": [2, 4], "skip": True}}},
        "cells": {"positions": ["layer3", "layer4"], "nodes": 1, "edges_per_node": 1},
        "ops": ["identity", {"name": "se", "params": {"reduction": 4}}, "eca"],
        "sampling": {"strategy": "gumbel", "tau": {"start": 5.0, "end": 0.5}},
        "schedule": {"epochs": 2, "warmup_epochs": 0, "batch": {"p": 2, "k": 4},
                     "weights": {"lr": 0.05}, "arch": {"lr": 0.01},
                     "cost": cost or {"form": "additive", "weight": 1.0, "target": 0.5}},
    }
    space["schedule"].update(schedule)
    return space


def tiny_tune_space(name: str = "tiny_tune") -> dict:
    """A retrain tune space over two recipe fields: two-epoch trials of PK 2x4."""
    return {
        "name": name,
        "target": "retrain",
        "metric": {"name": "mAP", "mode": "max"},
        "params": {
            "optimizer.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True},
            "loss.triplet_margin": {"type": "float", "low": 0.1, "high": 0.5},
        },
        "fixed": {"epochs": 2, "batch": {"p": 2, "k": 4},
                  "lr_schedule": {"warmup_epochs": 1, "milestones": []}},
    }
