"""Forward+backward time and peak memory of every registered op at the ResNet-50 positions.

Each op is built for the output of layer1..layer4 of a last-stride-1 ResNet-50 at 256x128,
(C, H, W) = (256, 64, 32), (512, 32, 16), (1024, 16, 8), (2048, 16, 8), and timed on a training
step (forward, then backward with a gradient of ones, input requiring grad). Beside each position
the plain backbone stage (torchvision ResNet-50 ``layerN``, random init, last stride 1, fed its
own input size) is measured in the same run as the reference.

Memory is the peak above the state just before the first step (module, input and output
gradient already allocated), i.e. activations, saved tensors, gradients and workspace:

- CPU: every case runs in a fresh worker process, started by a small launcher that imports
  nothing heavy; the launcher reads ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` once the
  worker has exited and subtracts the worker's RSS measured just before its first step. Just
  before that step the worker resets its RSS high-water mark to its current RSS (Linux
  ``/proc/self/clear_refs``), so transients of importing torch and building the module do not
  count; where that reset is refused the figure is an upper bound, marked "<=".
- CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the first step.

Time is the best of the repeats (as ``timeit`` advises: other processes sharing the cores only
ever add time), after two warm-up steps (the first CPU steps are slowed by the allocator
faulting in fresh pages). FLOPs are per image, forward only, by ``FlopCounterMode`` (2 per
multiply-accumulate; see ``nas_reid.ops.op_cost``).

    python bench/ops.py --quick              # batch 2, 1 repeat: a check that it runs
    python bench/ops.py                      # CPU, batch 16, 3 repeats
    python bench/ops.py --device cuda        # GPU, batch 64, 10 repeats

On a CPU whose cores other processes share, ``--threads 1`` gives much steadier times (with
several threads one stalled thread holds up the others at every parallel region).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.measure import run_measured, time_steps  # noqa: E402

POSITIONS = [  # (stage, output (C, H, W), input (C, H, W)) at 256x128, last stride 1
    (1, (256, 64, 32), (64, 64, 32)),
    (2, (512, 32, 16), (256, 64, 32)),
    (3, (1024, 16, 8), (512, 32, 16)),
    (4, (2048, 16, 8), (1024, 16, 8)),
]
REFERENCE = "reference"


def _build(case: dict):
    """The module and its input shape (C, H, W) for one case."""
    import torchvision

    from nas_reid.ops import build_op

    stage, out_shape, in_shape = POSITIONS[case["stage"] - 1]
    if case["op"] == REFERENCE:
        net = torchvision.models.resnet50(weights=None)
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        return getattr(net, f"layer{stage}"), in_shape
    return build_op(case["op"], *out_shape), out_shape


def run_case(case: dict) -> dict:
    """Build one case, time its training steps; returns params, flops, ms and memory fields."""
    import torch

    from nas_reid.ops import op_cost

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    device = torch.device(case["device"])
    torch.manual_seed(0)
    module, shape = _build(case)
    module = module.to(device).train()
    cost = op_cost(module, *shape)
    result = {"params": cost.params, "flops": cost.flops}
    x = torch.randn(case["batch"], *shape, device=device, requires_grad=True)
    with torch.no_grad():
        grad_out = torch.ones_like(module(x))

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        y = module(x)
        if y.requires_grad:  # the "zero" op has no backward
            y.backward(grad_out)
        del y

    result.update(time_steps(step, device, case["repeats"]))
    if device.type == "cuda":
        result["peak_mib"] = result["cuda_step_mib"]
    return result


def _measure_cpu(case: dict) -> dict:
    """Run one case in a fresh process; its peak RSS above the RSS before the first step."""
    result, peak_mib, _ = run_measured(__file__, ["--_worker", json.dumps(case)])
    result["peak_mib"] = peak_mib - result["base_rss_kb"] / 1024
    result["upper_bound"] = not result["hwm_reset"]
    return result


def _fmt_row(stage, shape, name, r, ref) -> str:
    mem = f"{'<=' if r.get('upper_bound') else ''}{r['peak_mib']:.1f}"
    t_ratio = r["ms"] / ref["ms"] if ref["ms"] else float("nan")
    m_ratio = r["peak_mib"] / ref["peak_mib"] if ref["peak_mib"] > 0 else float("nan")
    return (f"| layer{stage} {shape} | {name} | {r['params'] / 1e6:.3f} | "
            f"{r['flops'] / 1e9:.3f} | {r['ms']:.1f} | {mem} | {t_ratio:.2f} | {m_ratio:.2f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, help="default: 16 on CPU, 64 on CUDA, 2 with --quick")
    parser.add_argument("--repeats", type=int, help="default: 3 on CPU, 10 on CUDA, 1 with --quick")
    parser.add_argument("--quick", action="store_true", help="batch 2, one repeat")
    parser.add_argument("--ops", nargs="*", help="only these ops (default: every registered op)")
    parser.add_argument("--stages", nargs="*", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        with open(args.out, "w") as handle:
            json.dump(run_case(json.loads(args._worker)), handle)
        os._exit(0)  # skip interpreter teardown: with torch loaded it raises RSS by ~180 MB

    from nas_reid.ops import available_ops

    cuda = args.device == "cuda"
    batch = args.batch or (2 if args.quick else 64 if cuda else 16)
    repeats = args.repeats or (1 if args.quick else 10 if cuda else 3)
    ops = args.ops or available_ops()
    if cuda:
        import torch

        print(f"device: {torch.cuda.get_device_name()}, batch {batch}, {repeats} repeats")
    else:
        print(f"device: CPU ({os.cpu_count()} cores), batch {batch}, {repeats} repeats, "
              "one worker process per case")
    print()
    print("| position (C, H, W) | op | params (M) | GFLOPs/img | fwd+bwd ms | peak MiB "
          "| time / ref | mem / ref |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for stage, shape, _ in POSITIONS:
        if stage not in args.stages:
            continue
        ref = None
        for name in [REFERENCE, *ops]:
            case = {"op": name, "stage": stage, "batch": batch, "repeats": repeats,
                    "device": args.device, "threads": args.threads}
            r = run_case(case) if cuda else _measure_cpu(case)
            if ref is None:
                ref = r
            label = f"resnet50.layer{stage} (ref)" if name == REFERENCE else name
            print(_fmt_row(stage, shape, label, r, ref), flush=True)


if __name__ == "__main__":
    main()
