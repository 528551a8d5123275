"""Forward+backward time of the edge grounding f_E, per variant, for 1, 8 and 64 objects per image.

Every ordered pair of distinct objects of an image is a relation (n objects → n(n−1) pairs), as at test time
in PredCls/SGCls. Each cell of the table is the median of ``--repeats`` timed runs after one warm-up run, in this
one process, with the ``none`` variant (union feature only, same head) as the baseline of the ratio column.
The backward pass goes to the module's parameters and to the mask probabilities (which carry gradient when the
refinement head sits upstream); the union features come from the frozen detector and need none.

Default widths are small so the 64-object case (4032 pairs) runs in about a minute on 2 CPU cores;
``--paper`` uses the paper's (D = 256 union features, 150 mask channels, 1024-d FCs).

    python scripts/bench_grounding.py                       # small widths, CPU
    python scripts/bench_grounding.py --paper --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF = Path(__file__).resolve().parent.parent / "conf"


def make_inputs(
    num_objects: int, num_images: int, channels: int, mask_channels: int, num_labels: int, size: int, device
):
    g = torch.Generator().manual_seed(0)
    n = num_objects * num_images
    xy = torch.rand(n, 2, generator=g) * 600
    wh = 16 + torch.rand(n, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + wh], dim=1)
    local = torch.cartesian_prod(torch.arange(num_objects), torch.arange(num_objects))
    local = local[local[:, 0] != local[:, 1]]
    pairs = torch.cat([local + b * num_objects for b in range(num_images)])
    r = pairs.shape[0]
    return dict(
        union_features=torch.randn(r, channels, size, size, generator=g).to(device),
        mask_probs=torch.rand(n, mask_channels, size, size, generator=g).to(device).requires_grad_(),
        boxes=boxes.to(device),
        pair_index=pairs.to(device),
        label_probs=torch.rand(n, num_labels, generator=g).softmax(1).to(device),
    )


def time_once(module: torch.nn.Module, inputs: dict, device: torch.device) -> float:
    module.zero_grad(set_to_none=True)
    inputs["mask_probs"].grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = module(**inputs)
    out.sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, nargs="+", default=[1, 8, 64], help="objects per image")
    p.add_argument("--images", type=int, default=1, help="images per batch")
    p.add_argument("--variants", nargs="+", default=["none", "avg", "union", "gaussian"])
    p.add_argument("--mask-frame", default="union", choices=["union", "own_box"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--paper", action="store_true", help="paper widths: D=256, C_vg=150, FC 1024/1024")
    p.add_argument("--channels", type=int, default=16, help="D of the union features")
    p.add_argument("--mask-channels", type=int, default=16, help="C_vg mask channels")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--out", type=int, default=64)
    p.add_argument("--roi-size", type=int, default=28)
    p.add_argument("--pool-size", type=int, default=7)
    p.add_argument("--labels", type=int, default=151, help="C_obj, width of the label distributions")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.paper:
        args.channels, args.mask_channels, args.hidden, args.out = 256, 150, 1024, 1024
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = dict(
        in_channels=args.channels, num_mask_channels=args.mask_channels, num_label_classes=args.labels,
        roi_size=args.roi_size,
    )  # fmt: skip
    head = [f"model.grounding.hidden_dim={args.hidden}", f"model.grounding.out_dim={args.out}",
            f"model.grounding.pool_size={args.pool_size}", f"model.grounding.mask_frame={args.mask_frame}"]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # each variant is its config option (conf/model/grounding/edge/<variant>.yaml), built as build_stage2 does
        nodes = {v: compose("train", overrides=[f"model/grounding/edge={v}", *head]).model.grounding.edge
                 for v in args.variants}  # fmt: skip
    print(
        f"f_E forward+backward, median of {args.repeats} after 1 warm-up; device {device} ({args.threads} threads); "
        f"D={args.channels} C_vg={args.mask_channels} FC {args.hidden}/{args.out} M={args.roi_size} "
        f"pool {args.pool_size} frame={args.mask_frame}; {args.images} image(s)/batch"
    )
    header = f"{'objects/img':>11} {'pairs':>6} " + " ".join(
        f"{v + ' ms':>12} {'×none':>6}" for v in args.variants
    )
    print(header)
    print("-" * len(header))
    for n in args.objects:
        inputs = make_inputs(
            n, args.images, args.channels, args.mask_channels, args.labels, args.roi_size, device
        )
        r = inputs["pair_index"].shape[0]
        times = {}
        for v in args.variants:
            torch.manual_seed(0)
            module = instantiate(nodes[v])(**sizes).to(device)
            time_once(module, inputs, device)  # warm-up (allocator, kernels)
            times[v] = statistics.median(time_once(module, inputs, device) for _ in range(args.repeats))
            del module
        base = times.get("none")
        cells = []
        for v in args.variants:
            ratio = f"{times[v] / base:6.2f}" if base and r else f"{'—':>6}"
            cells.append(f"{times[v] * 1e3:12.1f} {ratio}")
        print(f"{n:>11} {r:>6} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
