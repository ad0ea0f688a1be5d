"""Seconds per training epoch: matxfer's ALIGNN vs the reference ``alignn`` package.

Data: the phonon set, study trial 1, size 800 (720 training + 80 validation
records), batch 16. Both models get the same graphs (matxfer's k-nearest atom
graph and full line graph; the reference's own pure-PyTorch collate,
``batch_torch_graph_pairs``, batches them as its LMDB loader does), the same
optimiser (AdamW, one-cycle) and L1 loss, at the paper's width and depth
(4 ALIGNN + 4 GCN layers, hidden 256) unless told otherwise. The reference
model is ``ALIGNNAtomWisePure`` (``alignn_atomwise_pure``) configured for
property regression (no force gradients, CGCNN atom features). Both run in
the same plain training loop (collate, forward, L1 loss, backward, AdamW and
one-cycle steps), without Lightning, so the numbers compare the models and
their batching, nothing else. matxfer runs the paper's BatchNorm model by
default (two passes over the rows for the column statistics); ``--norm
layer`` gives it the reference's LayerNorm, the same function, and with
``--same-init`` the reference's initial weights too.

Each side runs in its own subprocess, one after the other, so peak resident
memory (``ru_maxrss``) is its own. Also reported: matmul FLOPs of one matxfer
training step (forward + backward, counted analytically from the layer
shapes and each batch's atom, bond and triplet counts), the measured fp32 matmul rate at
representative shapes, and the fraction of that rate the step reaches.

Run on an idle machine: another process on the same cores slows torch
several-fold.

    python benchmarks/train_epoch.py                  # one full epoch each
    python benchmarks/train_epoch.py --batches 10     # quick estimate
    python benchmarks/train_epoch.py --epochs 3 --val-mae
    python benchmarks/train_epoch.py --norm layer --same-init --epochs 2 --val-mae
    python benchmarks/train_epoch.py --alignn-layers 2 --gcn-layers 2 --hidden 64
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_graphs(args: argparse.Namespace) -> tuple[list, list]:
    """Labelled training and validation graphs of the requested study subset."""
    from matxfer.training.config import resolve_config
    from matxfer.training.inputs import labelled_graphs, prepare_splits

    config = resolve_config("paper", {"seed": args.seed})
    splits = prepare_splits(
        args.dataset, config, data_dir=args.data_dir, trial=args.trial, size=args.size
    )
    return tuple(  # type: ignore[return-value]
        labelled_graphs(records, splits.target_names, config.graph)
        for records in (splits.train, splits.val)
    )


def batches_of(graphs: list, batch_size: int, seed: int, epoch: int) -> list[list]:
    """The training batches of one epoch, shuffled as matxfer's sampler does."""
    from matxfer.training.loaders import EpochShuffleSampler

    sampler = EpochShuffleSampler(len(graphs), seed)
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [
        [graphs[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)
    ]


class MatxferSide:
    """matxfer's ALIGNN fed PyG batches."""

    def __init__(self, args: argparse.Namespace) -> None:
        from matxfer.models import ALIGNN

        self.model = ALIGNN(
            num_outputs=1,
            alignn_layers=args.alignn_layers,
            gcn_layers=args.gcn_layers,
            hidden_features=args.hidden,
            embedding_features=args.embedding,
            norm=args.norm,
        )
        if args.same_init:  # the reference's initial weights (same seed, same draw order)
            import torch

            from matxfer.models.reference import map_reference_state_dict

            torch.manual_seed(args.seed)  # as the reference worker draws them
            start = ReferenceSide(args).model.state_dict()
            self.model.load_state_dict(map_reference_state_dict(start, self.model), strict=True)

    def collate(self, graphs: list) -> tuple[Any, Any]:
        from torch_geometric.data import Batch

        batch = Batch.from_data_list(graphs)
        return batch, batch.y[:, 0]

    def forward(self, batch: Any) -> Any:
        return self.model(batch)[:, 0]


class ReferenceSide:
    """The reference ``ALIGNNAtomWisePure`` fed ``TorchGraph`` pairs built from the same graphs."""

    def __init__(self, args: argparse.Namespace) -> None:
        from alignn.models.alignn_atomwise_pure import (
            ALIGNNAtomWisePure,
            ALIGNNAtomWisePureConfig,
        )

        from matxfer.models import cgcnn_feature_table

        config = ALIGNNAtomWisePureConfig(
            name="alignn_atomwise_pure",
            alignn_layers=args.alignn_layers,
            gcn_layers=args.gcn_layers,
            hidden_features=args.hidden,
            embedding_features=args.embedding,
            atom_input_features=92,
            output_features=1,
            calculate_gradient=False,
            gradwise_weight=0.0,
            energy_mult_natoms=False,
            use_penalty=False,
        )
        self.model = ALIGNNAtomWisePure(config)
        self.features = cgcnn_feature_table()

    def collate(self, graphs: list) -> tuple[Any, Any]:
        import torch
        from alignn.torch_graph_builder import TorchGraph, batch_torch_graph_pairs

        pairs = []
        for graph in graphs:
            atom_graph = TorchGraph(
                num_nodes=int(graph.z.numel()),
                src=graph.edge_index[0],
                dst=graph.edge_index[1],
                ndata={"atom_features": self.features[graph.z]},
                edata={"r": graph.edge_vec},
            )
            line = TorchGraph(
                num_nodes=int(graph.edge_index.size(1)),
                src=graph.lg_edge_index[0],
                dst=graph.lg_edge_index[1],
                edata={"h": graph.angle_cos},
            )
            pairs.append((atom_graph, line))
        g, lg = batch_torch_graph_pairs(pairs)
        lattice = torch.zeros(len(graphs), 3, 3)
        return (g, lg, lattice), torch.cat([graph.y[:, 0] for graph in graphs])

    def forward(self, batch: Any) -> Any:
        out = self.model(batch)
        return (out["out"] if isinstance(out, dict) else out).reshape(-1)


def matmul_rate(threads: int) -> float:
    """Measured fp32 GFLOP/s of ``torch.mm`` at shapes of ALIGNN's per-edge/per-triplet Linears."""
    import torch

    torch.set_num_threads(threads)
    rates = []
    for rows, width in [(20000, 256), (2000, 256), (20000, 64)]:
        a, b = torch.randn(rows, width), torch.randn(width, width)
        torch.mm(a, b)
        repeats, start = 10, time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        rates.append(2 * rows * width * width * repeats / (time.perf_counter() - start) / 1e9)
    return max(rates)


def step_flops(args: argparse.Namespace, atoms: int, edges: int, triplets: int) -> int:
    """Matmul FLOPs of one forward + backward pass, counted from the layer shapes.

    Counted analytically because the fused kernels of
    :mod:`matxfer.models.ops.gated_edges` are invisible to torch's FlopCounterMode.
    Every Linear of ``rows x d_in -> d_out`` costs ``2 rows d_in d_out`` forward
    and twice that backward (input and weight gradients). An edge-gated
    convolution on a graph with ``n`` nodes and ``m`` edges has four node
    Linears and one edge Linear (``h x h``); an ALIGNN layer is one on the atom
    graph (atoms, bonds) and one on the line graph (bonds, triplets).
    """
    h, emb = args.hidden, args.embedding

    def conv(nodes: int, links: int) -> int:
        return (4 * nodes + links) * h * h

    multiply_adds = (
        atoms * 92 * h  # atom embedding
        + edges * (80 * emb + emb * h)  # bond-length RBF -> MLP -> MLP
        + triplets * (40 * emb + emb * h)  # angle RBF -> MLP -> MLP
        + args.alignn_layers * (conv(atoms, edges) + conv(edges, triplets))
        + args.gcn_layers * conv(atoms, edges)
    )
    return 3 * 2 * multiply_adds


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train one side for the requested epochs/batches; timings and memory as a dict."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_graphs, val_graphs = load_graphs(args)
    side = MatxferSide(args) if args.worker == "matxfer" else ReferenceSide(args)
    per_epoch = math.ceil(len(train_graphs) / args.batch_size)
    steps = min(per_epoch, args.batches or per_epoch)
    optimizer = torch.optim.AdamW(side.model.parameters(), lr=1e-3, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=1e-3, total_steps=steps * args.epochs
    )
    val_batches = [
        side.collate(val_graphs[k : k + args.batch_size])
        for k in range(0, len(val_graphs), args.batch_size)
    ]
    result: dict[str, Any] = {
        "parameters": sum(p.numel() for p in side.model.parameters()),
        "batches_per_epoch": per_epoch,
        "timed_batches": steps,
    }
    batch_seconds, epoch_seconds, triplets, flops = [], [], [], []
    # Interpreter, libraries, graphs and model: the same for both sides.
    result["baseline_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    side.model.train()
    warm = side.collate(batches_of(train_graphs, args.batch_size, args.seed, 0)[0])
    torch.nn.functional.l1_loss(side.forward(warm[0]), warm[1]).backward()  # warm-up
    side.model.zero_grad()
    for epoch in range(args.epochs):
        start = time.perf_counter()
        side.model.train()
        for graphs in batches_of(train_graphs, args.batch_size, args.seed, epoch)[:steps]:
            t0 = time.perf_counter()
            batch, target = side.collate(graphs)
            loss = torch.nn.functional.l1_loss(side.forward(batch), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            batch_seconds.append(time.perf_counter() - t0)
            triplets.append(sum(g.num_triplets for g in graphs))
            atoms, edges = sum(g.num_nodes for g in graphs), sum(g.num_edges for g in graphs)
            flops.append(step_flops(args, atoms, edges, triplets[-1]))
        side.model.eval()
        errors = []
        with torch.no_grad():
            for batch, target in val_batches:
                errors.append((side.forward(batch) - target).abs())
        train_seconds = sum(batch_seconds[-steps:])
        val_seconds = time.perf_counter() - start - train_seconds
        # With --batches, an epoch is extrapolated from the timed batches.
        epoch_seconds.append(train_seconds * per_epoch / steps + val_seconds)
        result["val_mae"] = float(torch.cat(errors).mean())
    result.update(
        seconds_per_epoch=sum(epoch_seconds) / len(epoch_seconds),
        each_epoch=" / ".join(f"{seconds:.1f}" for seconds in epoch_seconds),
        seconds_per_batch=sum(batch_seconds) / len(batch_seconds),
        triplets_per_batch=sum(triplets) / len(triplets),
        step_flops=sum(flops) / len(flops),
        peak_memory_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    )
    return result


def run_side(name: str, argv: list[str]) -> dict[str, Any]:
    """Run :func:`worker` for one side in a fresh interpreter; its JSON result."""
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--worker", name],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        sys.exit(f"{name} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from matxfer.training.threads import allowed_cores

    default_threads = len(allowed_cores())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--dataset", default="ph")
    parser.add_argument("--trial", type=int, default=1)
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--batches",
        type=int,
        default=0,
        help="time only this many batches per epoch (quick estimate)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--alignn-layers", type=int, default=4)
    parser.add_argument("--gcn-layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--norm", default="batch", help="matxfer norm: batch (paper) or layer")
    parser.add_argument("--threads", type=int, default=default_threads)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--val-mae", action="store_true", help="print both models' validation MAE after the epochs"
    )
    parser.add_argument(
        "--same-init",
        action="store_true",
        help="start matxfer from the reference model's initial weights (with --norm layer: "
        "the same function, so validation MAEs after the same epochs should agree)",
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--worker", choices=["matxfer", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.same_init and args.norm != "layer":
        parser.error("--same-init needs --norm layer (the reference pure model's LayerNorm)")
    if args.worker:
        print(json.dumps(worker(args)))
        return

    argv = [a for a in sys.argv[1:]]
    print(
        f"phonons trial {args.trial} size {args.size}, {args.alignn_layers}+{args.gcn_layers} "
        f"layers x {args.hidden}, batch {args.batch_size}, {args.threads} threads, "
        f"{args.epochs} epoch(s){f', {args.batches} batches each' if args.batches else ''}"
    )
    ours = run_side("matxfer", argv)
    theirs = None if args.skip_reference else run_side("reference", argv)
    rate = matmul_rate(args.threads)
    achieved = ours["step_flops"] / ours["seconds_per_batch"] / 1e9
    print(f"{'':24}{'matxfer':>12}{'alignn':>12}")
    rows = [
        ("parameters", "parameters", "{:,}"),
        ("triplets per batch", "triplets_per_batch", "{:,.0f}"),
        ("seconds per batch", "seconds_per_batch", "{:.3f}"),
        ("seconds per epoch", "seconds_per_epoch", "{:.1f}"),
        ("  each epoch", "each_epoch", "{}"),
        ("peak memory (GB)", "peak_memory_gb", "{:.2f}"),
        ("  before training (GB)", "baseline_memory_gb", "{:.2f}"),
    ]
    if args.val_mae:
        rows.append((f"val MAE after {args.epochs} ep.", "val_mae", "{:.4f}"))
    for label, key, fmt in rows:
        other = fmt.format(theirs[key]) if theirs else "-"
        print(f"{label:24}{' ' + fmt.format(ours[key]):>12}{' ' + other:>12}")
    print(
        f"matxfer step: {ours['step_flops'] / 1e9:.1f} GFLOP (matmul, fwd+bwd) in "
        f"{ours['seconds_per_batch']:.3f} s = {achieved:.1f} GFLOP/s; measured fp32 matmul "
        f"rate {rate:.1f} GFLOP/s -> {achieved / rate:.0%} of peak"
    )
    if theirs:
        training = [side["peak_memory_gb"] - side["baseline_memory_gb"] for side in (ours, theirs)]
        print(
            f"peak memory: {ours['peak_memory_gb'] / theirs['peak_memory_gb']:.2f}x the "
            f"reference's; training's share (peak minus before training): "
            f"{training[0] / training[1]:.2f}x"
        )
        print(f"speedup_vs_alignn: {theirs['seconds_per_epoch'] / ours['seconds_per_epoch']:.2f}")


if __name__ == "__main__":
    main()
