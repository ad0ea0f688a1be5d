"""Crystal → :class:`~matxfer.graphs.data.CrystalGraph`, one at a time or many in parallel.

Graphs are built in chunks: the neighbour search runs per crystal (pymatgen's C
code), everything after it (k-th distances, bond symmetrisation, line graph,
cosines) runs once per chunk on the chunk's disjoint union, so numpy's per-call
cost is shared by all crystals of a chunk. Chunks run on ``num_workers``
processes that only use numpy and never pickle pymatgen objects; tensors are
made in the calling process at the end. :func:`build_graphs` reads finished
graphs from a content-keyed disk cache (:mod:`matxfer.graphs.cache`) and builds
only the missing ones.

Speed (``benchmarks/graph_build.py``, fe pool, 1,000 crystals of 13.6 atoms, one
core, CPU time): about 4,300 crystals/s, against 120/s for the reference's
``k-nearest`` code and 725/s for its different ``pure_torch`` graph.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from matxfer.data.validate import MAX_ATOMS, InvalidRecordError, check_atom_count
from matxfer.errors import ConfigError, DataError, MatxferError, Problem
from matxfer.graphs.cache import AtomGraph, GraphCache
from matxfer.graphs.config import GraphConfig
from matxfer.graphs.data import CrystalGraph
from matxfer.graphs.line_graph import bond_cosines, line_graph
from matxfer.graphs.neighbors import k_nearest_edges_batch

#: (atomic numbers [N], fractional coordinates [N, 3], lattice [3, 3]): all a graph needs.
CrystalArrays = tuple[np.ndarray, np.ndarray, np.ndarray]

#: Chunk limits: enough crystals to share numpy's per-call cost, few enough atoms
#: to bound memory (line-graph temporaries grow with ~175 pairs per atom).
_MAX_CHUNK = 128
_MAX_CHUNK_ATOMS = 4096


@dataclass(frozen=True)
class GraphArrays:
    """One crystal's graphs as compact numpy arrays (what workers return).

    Attributes:
        z: ``[N]`` uint8 atomic numbers.
        edge_index: ``[2, E]`` int32 (source, destination) atoms, sorted by source.
        edge_vec: ``[E, 3]`` float32 bond vectors ``r_dst + image - r_src`` (Å).
        lg_edge_index: ``[2, T]`` int32 bond pairs (empty without a line graph).
        angle_cos: ``[T]`` float32 bond-angle cosines.
    """

    z: np.ndarray
    edge_index: np.ndarray
    edge_vec: np.ndarray
    lg_edge_index: np.ndarray
    angle_cos: np.ndarray

    def to_graph(self) -> CrystalGraph:
        """Tensors for the model: indices as int64, as PyG and scatter ops expect."""
        return CrystalGraph(
            num_nodes=len(self.z),
            z=torch.from_numpy(self.z.astype(np.int64)),
            edge_index=torch.from_numpy(self.edge_index.astype(np.int64)),
            # Copies: the arrays may be views into a whole chunk's buffers.
            edge_vec=torch.from_numpy(self.edge_vec.copy()),
            lg_edge_index=torch.from_numpy(self.lg_edge_index.astype(np.int64)),
            angle_cos=torch.from_numpy(self.angle_cos.copy()),
        )


def crystal_arrays(structure: Structure) -> CrystalArrays:
    """The arrays of ``structure`` that define its graphs.

    Raises:
        MatxferError: The structure has partially occupied (disordered) sites.
    """
    try:
        numbers = np.array(structure.atomic_numbers, dtype=np.int64)
    except AttributeError:
        raise MatxferError(
            "structure has partially occupied sites; ALIGNN graphs need one element per site"
        ) from None
    return numbers, structure.frac_coords, structure.lattice.matrix


def atom_graphs(crystals: Sequence[CrystalArrays], config: GraphConfig) -> list[AtomGraph | str]:
    """Atom graphs ``(z, edge_index, edge_vec)`` of many crystals; an error message where none."""
    cells = [(frac, lattice) for _, frac, lattice in crystals]
    batch = k_nearest_edges_batch(cells, config.max_neighbors, config.max_cutoff)
    owner = np.repeat(np.arange(len(crystals)), np.diff(batch.edge_ptr))
    local = np.stack([batch.src, batch.dst]) - batch.atom_ptr[owner]
    edge_index = local.astype(np.int32)
    vec = batch.vec.astype(np.float32)
    out: list[AtomGraph | str] = []
    for s, (numbers, _, _) in enumerate(crystals):
        if s in batch.errors:
            out.append(batch.errors[s])
            continue
        edges = slice(batch.edge_ptr[s], batch.edge_ptr[s + 1])
        out.append((numbers.astype(np.uint8), edge_index[:, edges], vec[edges]))
    return out


def with_line_graphs(graphs: Sequence[AtomGraph], config: GraphConfig) -> list[GraphArrays]:
    """Add line graphs and angle cosines to atom graphs (one vectorised pass for all)."""
    empty = (np.zeros((2, 0), dtype=np.int32), np.zeros(0, dtype=np.float32))
    if not config.line_graph or not graphs:
        return [GraphArrays(*graph, *empty) for graph in graphs]
    n_atoms = np.array([len(z) for z, _, _ in graphs])
    n_edges = np.array([edge_index.shape[1] for _, edge_index, _ in graphs])
    atom_offset = np.repeat(np.cumsum(n_atoms) - n_atoms, n_edges)
    edge_index = np.concatenate([e for _, e, _ in graphs], axis=1) + atom_offset
    vec = np.concatenate([v for _, _, v in graphs])
    pairs = line_graph(edge_index[0], edge_index[1], int(n_atoms.sum()))
    cos = bond_cosines(vec, pairs)
    # Pairs come grouped by their first bond, so each crystal's are contiguous.
    edge_ptr = np.concatenate([[0], np.cumsum(n_edges)])
    pair_ptr = np.searchsorted(pairs[0], edge_ptr)
    owner = np.repeat(np.arange(len(graphs)), np.diff(pair_ptr))
    local_pairs = (pairs - edge_ptr[owner]).astype(np.int32)
    return [
        GraphArrays(
            *graph,
            local_pairs[:, pair_ptr[s] : pair_ptr[s + 1]],
            cos[pair_ptr[s] : pair_ptr[s + 1]],
        )
        for s, graph in enumerate(graphs)
    ]


def build_graph(
    structure: Structure, config: GraphConfig | None = None, max_atoms: int = MAX_ATOMS
) -> CrystalGraph:
    """ALIGNN's atom graph and line graph of one crystal.

    Args:
        structure: An ordered crystal.
        config: Graph parameters (default: :class:`GraphConfig` defaults).
        max_atoms: Most atoms accepted (default: :data:`~matxfer.data.validate.MAX_ATOMS`).

    Raises:
        MatxferError: The structure is disordered or has over ``max_atoms`` atoms,
            its cell is degenerate, or an atom has fewer than ``max_neighbors``
            neighbours within ``max_cutoff``.
    """
    config = config or GraphConfig()
    arrays = crystal_arrays(structure)
    try:
        check_atom_count(len(arrays[0]), max_atoms)
    except InvalidRecordError as error:
        raise MatxferError(str(error)) from None
    graph = atom_graphs([arrays], config)[0]
    if isinstance(graph, str):
        raise MatxferError(graph)
    return with_line_graphs([graph], config)[0].to_graph()


def build_graphs(
    structures: Sequence[Structure],
    config: GraphConfig | None = None,
    cache_dir: str | Path | None = None,
    num_workers: int = 1,
    progress: bool = True,
    *,
    ids: Sequence[str] | None = None,
    max_atoms: int = MAX_ATOMS,
) -> list[CrystalGraph]:
    """Graphs of many crystals, from the disk cache where possible.

    Args:
        structures: Ordered crystals.
        config: Graph parameters (default: :class:`GraphConfig` defaults).
        cache_dir: Directory of the content-keyed graph cache; ``None`` builds
            everything and stores nothing (default: ``None``).
        num_workers: Processes that build graphs; ``1`` builds in this process
            (default: ``1``).
        progress: Show a progress bar on stderr (default: ``True``).
        ids: Record ids, only to name failing structures in errors (default: ``None``).
        max_atoms: Most atoms per structure; a larger one is a problem, not a
            memory blow-up (default: :data:`~matxfer.data.validate.MAX_ATOMS`).

    Returns:
        One :class:`CrystalGraph` per structure, in order.

    Raises:
        ConfigError: ``num_workers`` is below 1.
        DataError: Some structures have no valid graph; one problem per structure.
    """
    config = config or GraphConfig()
    if num_workers < 1:
        raise ConfigError(f"num_workers must be at least 1, got {num_workers}")
    problems: list[Problem] = []
    crystals: list[CrystalArrays | None] = []
    for index, structure in enumerate(structures):
        try:
            arrays = crystal_arrays(structure)
            check_atom_count(len(arrays[0]), max_atoms)
            crystals.append(arrays)
        except (MatxferError, InvalidRecordError) as error:
            crystals.append(None)
            problems.append(_problem(index, ids, str(error)))

    cache = GraphCache(cache_dir, config) if cache_dir is not None else None
    keys = [cache.key(*c) if cache and c is not None else "" for c in crystals]
    found = [cache.load(key) if cache and key else None for key in keys]
    cached = {i: graph for i, graph in enumerate(found) if graph is not None}
    missing = [i for i, c in enumerate(crystals) if c is not None and i not in cached]
    chunks = _chunks(missing, [len(c[0]) if c else 0 for c in crystals], num_workers)
    jobs = [([crystals[i] for i in chunk], [keys[i] for i in chunk]) for chunk in chunks]
    cache_root = cache.directory if cache else None
    results: list[GraphArrays | None] = [None] * len(crystals)
    # Workers start (and fork) before the progress bar starts its thread.
    with (
        _built_chunks(jobs, config, cache_root, num_workers) as built_chunks,
        _progress_bar(progress, len(crystals)) as advance,
    ):
        for chunk in _chunks(list(cached), [len(g[0]) if g else 0 for g in found], 1):
            graphs = with_line_graphs([cached[i] for i in chunk], config)
            for index, graph in zip(chunk, graphs, strict=True):
                results[index] = graph
            advance(len(chunk))
        for chunk, built in zip(chunks, built_chunks, strict=True):
            for index, outcome in zip(chunk, built, strict=True):
                if isinstance(outcome, str):
                    problems.append(_problem(index, ids, outcome))
                else:
                    results[index] = outcome
            advance(len(chunk))
    if problems:
        problems.sort(key=lambda p: p.index if p.index is not None else -1)
        raise DataError(
            f"{len(problems)} of {len(crystals)} structures have no valid graph", problems
        )
    return [result.to_graph() for result in results if result is not None]


def _build_chunk(
    crystals: list[CrystalArrays], keys: list[str], config: GraphConfig, cache_root: Path | None
) -> list[GraphArrays | str]:
    """Build (and cache) a chunk; a failing crystal yields its error message."""
    cache = GraphCache(cache_root, config) if cache_root is not None else None
    graphs = atom_graphs(crystals, config)
    good = [graph for graph in graphs if not isinstance(graph, str)]
    if cache:
        for key, graph in zip(keys, graphs, strict=True):
            if not isinstance(graph, str):
                cache.save(key, *graph)
    finished = iter(with_line_graphs(good, config))
    return [graph if isinstance(graph, str) else next(finished) for graph in graphs]


@contextmanager
def _built_chunks(
    jobs: list[tuple[list[CrystalArrays], list[str]]],
    config: GraphConfig,
    cache_root: Path | None,
    num_workers: int,
) -> Iterator[Iterator[list[GraphArrays | str]]]:
    """Yields the outcomes of ``jobs`` in order, built here or on worker processes."""
    if num_workers == 1 or len(jobs) <= 1:
        yield (_build_chunk(crystals, keys, config, cache_root) for crystals, keys in jobs)
        return
    methods = multiprocessing.get_all_start_methods()
    # fork: workers start at once without re-importing torch; they run numpy only.
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(min(num_workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_build_chunk, c, k, config, cache_root) for c, k in jobs]
        yield (future.result() for future in futures)


def _chunks(indices: list[int], sizes: list[int], num_workers: int) -> list[list[int]]:
    """Consecutive chunks of ``indices``, limited in crystals and in atoms (``sizes``)."""
    most = max(1, min(_MAX_CHUNK, math.ceil(len(indices) / (4 * num_workers))))
    chunks: list[list[int]] = []
    atoms = 0
    for index in indices:
        if not chunks or len(chunks[-1]) >= most or atoms + sizes[index] > _MAX_CHUNK_ATOMS:
            chunks.append([])
            atoms = 0
        chunks[-1].append(index)
        atoms += sizes[index]
    return chunks


def _problem(index: int, ids: Sequence[str] | None, reason: str) -> Problem:
    return Problem("structures", index, ids[index] if ids is not None else None, reason)


@contextmanager
def _progress_bar(show: bool, total: int) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; a rich bar on stderr when ``show``, else a no-op."""
    if not (show and total):
        yield lambda n: None
        return
    columns = (TextColumn("graphs"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("graphs", total=total)
        yield lambda n: bar.advance(task, n)
