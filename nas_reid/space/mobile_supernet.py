"""The mobile backbone as a supernet: the widest network, run narrower by masks (FBNetV2's
DMaskingNAS), with one architecture choice per stage and dimension.

Choices (:attr:`MobileSupernetBackbone.choices`, in network order; only dimensions with more
than one option get one): ``<stage>_width``, ``<stage>_kernel``, ``<stage>_expansion`` and,
with ``skip``, ``<stage>_b<j>_skip`` (keep / skip) for every block ``j >= 1``; one architecture
parameter (a logit per option) per choice, ``arch_backbone.<key>``. Each forward draws every
choice once (:func:`choice_weights`), shared by the stage's blocks: channels beyond the drawn
width or expansion are masked, depthwise weights outside the drawn kernel zeroed, a skipped
block not run. With ``gumbel`` a training forward computes exactly one narrow network; in eval
mode every choice takes its most probable option, so the supernet computes exactly what
:func:`derive_arch`'s network computes with the weights cut out by
:func:`nas_reid.space.mobile.narrow_state_dict`. With ``softmax`` the masks are mixtures.
:func:`expected_flops`: the backbone's FLOPs in expectation, a differentiable cost.
The masks, the draws and the cells in detail: docs/internals.md, section
`nas_reid.space.mobile_supernet`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas_reid.space.mixed import gumbel_hard_sample
from nas_reid.space.mobile import (
    LAYERS,
    MobileArch,
    MobileBackbone,
    MobileConfig,
    StageArch,
    _half,
    effective_stride,
)

KEEP_SKIP = ("keep", "skip")


@dataclass(frozen=True)
class Choice:
    """One architecture decision of the backbone."""

    key: str
    stage: str
    kind: str
    """``width``, ``kernel``, ``expansion`` or ``skip``."""
    options: tuple
    block: int | None = None


def choice_weights(alpha: torch.Tensor, tau: float | torch.Tensor, strategy: str,
                   training: bool) -> tuple[int | None, torch.Tensor]:
    """``(k, h)`` of one draw: ``gumbel`` in training: a hard straight-through sample;
    ``gumbel`` in eval: the most probable option; ``softmax``: ``(None, softmax(alpha))``."""
    if strategy == "softmax":
        return None, F.softmax(alpha, dim=-1)
    if training:
        return gumbel_hard_sample(alpha, tau)
    k = int(alpha.argmax())
    return k, F.one_hot(torch.tensor(k, device=alpha.device), alpha.numel()).to(alpha.dtype)


class MobileSupernetBackbone(MobileBackbone):
    """The widest :class:`MobileBackbone` of a :class:`MobileConfig`, run through masks."""

    def __init__(self, config: MobileConfig, last_stride: int, input_hw: tuple[int, int]) -> None:
        super().__init__(config.widest(last_stride), last_stride)
        self.config, self.input_hw = config, tuple(input_hw)
        self.options = {s.name: {**config.options(s), "width": config.widths(s)} for s in config.stages}
        choices: list[Choice] = []
        for stage in config.stages:
            opts = self.options[stage.name]
            for kind in ("width", "kernel", "expansion"):
                if len(opts[kind]) > 1:
                    choices.append(Choice(f"{stage.name}_{kind}", stage.name, kind, tuple(opts[kind])))
            if opts["skip"]:
                choices += [Choice(f"{stage.name}_b{j}_skip", stage.name, "skip", KEEP_SKIP, j)
                            for j in range(1, stage.blocks)]
        self.choices = choices
        self._by_key = {c.key: c for c in choices}
        # masks as non-persistent buffers (derived from the config; they follow .to(device))
        prev = [config.stem]
        for stage in config.stages:
            widths, opts = self.options[stage.name]["width"], self.options[stage.name]
            self._buffer(f"{stage.name}_width", _prefix_masks(widths, max(widths)))
            for tag, ins in (("first", prev), ("rest", widths)):
                hidden = max(opts["expansion"]) * max(ins)
                self._buffer(f"{stage.name}_hidden_{tag}", _prefix_masks(
                    [[e * w for e in opts["expansion"]] for w in ins], hidden))
            big = max(opts["kernel"])
            km = torch.zeros(len(opts["kernel"]), big, big)
            for i, k in enumerate(opts["kernel"]):
                lo = (big - k) // 2
                km[i, lo:lo + k, lo:lo + k] = 1
            self._buffer(f"{stage.name}_kernel", km)
            prev = widths

    def _buffer(self, name: str, value: torch.Tensor) -> None:
        self.register_buffer(f"mask_{name}", value, persistent=False)

    def _mask(self, name: str) -> torch.Tensor:
        return getattr(self, f"mask_{name}")

    # -- drawing and running

    def draw(self, arch: nn.ParameterDict, tau: float | torch.Tensor, strategy: str) -> dict:
        """One draw of every choice: ``{key: (k, h)}`` (see :func:`choice_weights`)."""
        return {c.key: choice_weights(arch[c.key], tau, strategy, self.training) for c in self.choices}

    def _weights(self, draws: dict, stage: str, kind: str, n: int, like: torch.Tensor) -> torch.Tensor:
        key = f"{stage}_{kind}"
        if key in draws:
            return draws[key][1]
        return torch.ones(n, device=like.device, dtype=like.dtype)

    def run_layer(self, layer: str, x: torch.Tensor, draws: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stages of ``layer`` (``stem`` includes the stem conv) under ``draws``; returns the
        output and the last stage's width mask (None when that width is fixed)."""
        if layer == "stem":
            x = self.stem_conv(x)
        out_mask = None
        prev_h = self._prev_width_weights(layer, draws, x)
        for stage in self.arch.stages:
            if stage.layer != layer:
                continue
            opts = self.options[stage.name]
            w_h = self._weights(draws, stage.name, "width", len(opts["width"]), x)
            e_h = self._weights(draws, stage.name, "expansion", len(opts["expansion"]), x)
            k_h = self._weights(draws, stage.name, "kernel", len(opts["kernel"]), x)
            out_mask = w_h @ self._mask(f"{stage.name}_width") if len(w_h) > 1 else None
            hidden = {tag: torch.einsum("i,k,ikc->c", h, e_h, self._mask(f"{stage.name}_hidden_{tag}"))
                      if len(h) * len(e_h) > 1 else None
                      for tag, h in (("first", prev_h), ("rest", w_h))}
            kernel = (torch.einsum("k,kab->ab", k_h, self._mask(f"{stage.name}_kernel"))
                      if len(k_h) > 1 else None)
            for j, block in enumerate(self.stages[stage.name].values()):
                hid = hidden["first" if j == 0 else "rest"]
                key = f"{stage.name}_b{j}_skip"
                if key not in draws:
                    x = block(x, hid, out_mask, kernel)
                    continue
                k, h = draws[key]
                if k == 1:  # skipped: not run, the input stands in for it
                    x = h.sum() * x
                else:
                    x = h[0] * block(x, hid, out_mask, kernel) + h[1] * x
            prev_h = w_h
        return x, out_mask

    def _prev_width_weights(self, layer: str, draws: dict, like: torch.Tensor) -> torch.Tensor:
        """Width weights of the stage before ``layer``'s first stage (the stem: one option)."""
        before = [s for s in self.arch.stages if LAYERS.index(s.layer) < LAYERS.index(layer)]
        if not before:
            return torch.ones(1, device=like.device, dtype=like.dtype)
        name = before[-1].name
        return self._weights(draws, name, "width", len(self.options[name]["width"]), like)

    # -- the chosen network and its cost

    def derive_arch(self, probs: dict[str, torch.Tensor]) -> MobileArch:
        """The network of the most probable option of every choice (a block is kept unless
        skipping it is strictly more probable; ties: the first option)."""
        stages = []
        for stage in self.config.stages:
            opts = self.options[stage.name]
            pick = {}
            for kind in ("width", "kernel", "expansion"):
                key = f"{stage.name}_{kind}"
                pick[kind] = opts[kind][int(probs[key].argmax())] if key in probs else opts[kind][0]
            blocks = [True] + [
                not (f"{stage.name}_b{j}_skip" in probs
                     and float(probs[f"{stage.name}_b{j}_skip"][1]) > float(probs[f"{stage.name}_b{j}_skip"][0]))
                for j in range(1, stage.blocks)]
            stages.append(StageArch(name=stage.name, layer=stage.layer, stride=stage.stride,
                                    blocks=blocks, **pick))
        return MobileArch(stem=self.config.stem, head=self.config.head,
                          activation=self.config.activation, stages=stages)

    def expected_flops(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """FLOPs of the backbone in expectation under ``probs`` (``{key: probabilities}``),
        differentiable in them; equal to :func:`~nas_reid.space.mobile.arch_flops` of a network
        when ``probs`` are one-hot."""
        ref = next(iter(probs.values())) if probs else torch.zeros(())
        one = torch.ones((), dtype=ref.dtype, device=ref.device)

        def moments(stage: str, kind: str, values) -> tuple[torch.Tensor, torch.Tensor]:
            v = torch.tensor([float(x) for x in values], dtype=ref.dtype, device=ref.device)
            key = f"{stage}_{kind}"
            p = probs[key] if key in probs else torch.ones(1, dtype=ref.dtype, device=ref.device)
            return (p * v).sum(), (p * v * v).sum()

        h, w = _half(self.input_hw[0]), _half(self.input_hw[1])
        total = one * 2 * h * w * 3 * self.config.stem * 9
        in_mean, in_sq = one * self.config.stem, one * self.config.stem ** 2
        for stage in self.config.stages:
            opts = self.options[stage.name]
            w_mean, w_sq = moments(stage.name, "width", opts["width"])
            e_mean, _ = moments(stage.name, "expansion", opts["expansion"])
            _, k_sq = moments(stage.name, "kernel", opts["kernel"])
            has_expand = opts["expansion"] != [1]
            s = effective_stride(stage, self.last_stride)
            ho, wo = (_half(h), _half(w)) if s == 2 else (h, w)
            # first block: cin = the previous width (independent of this stage's draws)
            first = (h * w * e_mean * in_sq if has_expand else 0) \
                + ho * wo * e_mean * in_mean * k_sq + ho * wo * e_mean * in_mean * w_mean
            rest = (ho * wo * e_mean * w_sq if has_expand else 0) \
                + ho * wo * e_mean * w_mean * k_sq + ho * wo * e_mean * w_sq
            kept = sum((probs[f"{stage.name}_b{j}_skip"][0] if f"{stage.name}_b{j}_skip" in probs else one)
                       for j in range(1, stage.blocks)) if stage.blocks > 1 else 0 * one
            total = total + 2 * (first + kept * rest)
            in_mean, in_sq, h, w = w_mean, w_sq, ho, wo
        if self.config.head:
            total = total + 2 * h * w * in_mean * self.config.head
        return total

    def extra_repr(self) -> str:
        return f"widest: {self.arch.summary()}, choices={len(self.choices)}"


def _prefix_masks(option_widths: list, size: int) -> torch.Tensor:
    """``masks[..., c] = 1[c < option_widths[...]]``: one prefix mask of length ``size`` per
    entry of the (nested) list of widths."""
    table = torch.tensor(option_widths, dtype=torch.float32)
    return (torch.arange(size, dtype=torch.float32) < table.unsqueeze(-1)).float()
