"""What the attention cells of trained models do to the features: gate values and feature scale.

For each model (a retrain run folder or checkpoint) this runs ``--images`` gallery images of its
dataset through the network in eval mode and prints, per cell position: the cell's op, the mean
|x| entering and leaving the cell and their ratio, and for every sigmoid gate (RGA-S, RGA-C, the
two of RGA-SC) the mean, standard deviation and 5 / 95 % quantiles of its weights. The first
model is the reference (e.g. the baseline, whose stages have no cell: its rows show the scale of
the stage outputs the next stage was pretrained on).

    python bench/gate_stats.py runs/synthetic_table/pretrained-128x64/baseline-seed0 \\
                               runs/synthetic_table/pretrained-128x64/rga_sc-seed0
"""

from __future__ import annotations

import argparse


def stats(model, images, torch):
    from nas_reid.ops.rga import RGAChannel, RGASpatial
    from nas_reid.space.backbone import POSITIONS

    rows: dict[str, dict] = {}
    hooks = []
    for position in POSITIONS:
        stage = model.backbone.stage(position)
        cell = model.cells[position] if position in model.cells else None

        def after_stage(_m, _i, out, position=position):
            rows.setdefault(position, {})["stage_out"] = out.abs().mean().item()
        hooks.append(stage.register_forward_hook(after_stage))
        if cell is None:
            continue

        def after_cell(_m, inp, out, position=position):
            row = rows.setdefault(position, {})
            row["in"], row["out"] = inp[0].abs().mean().item(), out.abs().mean().item()
        hooks.append(cell.register_forward_hook(after_cell))
        for name, module in cell.named_modules():
            if isinstance(module, (RGASpatial, RGAChannel)):
                kind = "S" if isinstance(module, RGASpatial) else "C"

                def gate(m, inp, _out, position=position, kind=kind):
                    g = m.attention(inp[0]).flatten()
                    q = torch.quantile(g, torch.tensor([0.05, 0.95]))
                    rows[position][f"gate_{kind}"] = (g.mean().item(), g.std().item(),
                                                      q[0].item(), q[1].item())
                hooks.append(module.register_forward_hook(gate))
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="retrain run folders or model checkpoints")
    parser.add_argument("--images", type=int, default=128, help="gallery images to run")
    args = parser.parse_args()

    import torch

    from nas_reid.data import load_dataset
    from nas_reid.data.streams import plain_loader
    from nas_reid.train.checkpoint import load_model

    torch.manual_seed(0)
    for run in args.runs:
        loaded = load_model(run)
        data = loaded.state["data"]
        gallery = load_dataset(data["name"], data["root"]).gallery
        step = max(1, len(gallery) // args.images)
        items = gallery[::step][:args.images]
        images = torch.cat([b[0] for b in plain_loader(items, loaded.genotype.input_size,
                                                        batch_size=64)])
        rows = stats(loaded.model.eval(), images, torch)
        print(f"\n{run}: {loaded.genotype.summary()}")
        print("| position | stage out mean|x| | cell in | cell out | out / in | gate S mean +- std "
              "[5%, 95%] | gate C mean +- std [5%, 95%] |")
        print("|---|---:|---:|---:|---:|---|---|")
        for position, row in rows.items():
            cells = [f"{row[k]:.3f}" if k in row else "-" for k in ("stage_out", "in", "out")]
            ratio = f"{row['out'] / row['in']:.3f}" if "in" in row else "-"
            gates = [f"{g[0]:.3f} +- {g[1]:.3f} [{g[2]:.2f}, {g[3]:.2f}]" if g else "-"
                     for g in (row.get("gate_S"), row.get("gate_C"))]
            print(f"| {position} | {' | '.join(cells)} | {ratio} | {' | '.join(gates)} |")


if __name__ == "__main__":
    main()
