"""build_graphs: cache keys, cache hits, damaged cache files, worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pymatgen.core import Structure

from matxfer.errors import ConfigError
from matxfer.graphs import CrystalGraph, GraphCache, GraphConfig, build_graph, build_graphs
from matxfer.graphs import build as build_module
from matxfer.graphs.build import crystal_arrays

FIELDS = ("z", "edge_index", "edge_vec", "lg_edge_index", "angle_cos")


def assert_same_graphs(left: list[CrystalGraph], right: list[CrystalGraph]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        for name in FIELDS:
            assert torch.equal(a[name], b[name]), name


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*.mxg"))


def test_graph_tensor_types(small_structures: list[Structure]) -> None:
    graph = build_graph(small_structures[3])
    assert graph.z.dtype == graph.edge_index.dtype == graph.lg_edge_index.dtype == torch.int64
    assert graph.edge_vec.dtype == graph.angle_cos.dtype == torch.float32
    assert graph.edge_vec.shape == (graph.edge_index.size(1), 3)
    assert graph.angle_cos.shape == (graph.lg_edge_index.size(1),)
    assert torch.equal(graph.z, torch.tensor(small_structures[3].atomic_numbers))


def test_many_equals_one_at_a_time(small_structures: list[Structure]) -> None:
    together = build_graphs(small_structures, progress=False)
    assert_same_graphs(together, [build_graph(s) for s in small_structures])


def test_without_line_graph(small_structures: list[Structure]) -> None:
    graph = build_graph(small_structures[0], GraphConfig(line_graph=False))
    assert graph.num_triplets == 0
    assert graph.edge_index.size(1) > 0


def test_cache_hit_returns_identical_graphs(
    small_structures: list[Structure], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = build_graphs(small_structures, cache_dir=tmp_path, progress=False)
    assert len(cache_files(tmp_path)) == len(small_structures)

    def no_building(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached graph was rebuilt")

    monkeypatch.setattr(build_module, "atom_graphs", no_building)
    assert_same_graphs(build_graphs(small_structures, cache_dir=tmp_path, progress=True), fresh)


def test_cache_key_covers_content_and_every_parameter(small_structures: list[Structure]) -> None:
    crystal = crystal_arrays(small_structures[5])
    numbers, frac, lattice = crystal
    base = GraphCache("unused", GraphConfig())
    key = base.key(*crystal)
    assert key == GraphCache("elsewhere", GraphConfig()).key(*crystal_arrays(small_structures[5]))
    moved = frac.copy()
    moved[0, 0] += 1e-9
    changed = [
        base.key(numbers, moved, lattice),
        base.key(numbers[::-1].copy(), frac, lattice),
        base.key(numbers, frac, lattice * 1.0001),
        *(
            GraphCache("unused", GraphConfig(**{name: value})).key(*crystal)
            for name, value in [
                ("max_neighbors", 8),
                ("max_cutoff", 25.0),
                ("line_graph", False),
            ]
        ),
    ]
    assert key not in changed
    assert len(set(changed)) == len(changed)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:-5] + bytes(5),  # flipped bytes
        lambda data: b"",  # empty
        lambda data: b"not a graph at all" * 10,  # foreign
    ],
)
def test_damaged_cache_file_is_rebuilt(
    small_structures: list[Structure], tmp_path: Path, damage: object
) -> None:
    structures = small_structures[:3]
    fresh = build_graphs(structures, cache_dir=tmp_path, progress=False)
    victim = cache_files(tmp_path)[0]
    victim.write_bytes(damage(victim.read_bytes()))  # type: ignore[operator]
    assert_same_graphs(build_graphs(structures, cache_dir=tmp_path, progress=False), fresh)
    assert len(cache_files(tmp_path)) == 3
    # The rebuilt file is whole again.
    assert GraphCache(tmp_path, GraphConfig()).load(victim.stem) is not None


def test_worker_processes_give_the_same_graphs(
    small_structures: list[Structure], tmp_path: Path
) -> None:
    serial = build_graphs(small_structures, progress=False)
    parallel = build_graphs(small_structures, cache_dir=tmp_path, num_workers=2, progress=False)
    assert_same_graphs(parallel, serial)
    assert len(cache_files(tmp_path)) == len(small_structures)


def test_no_leftover_temporary_files(small_structures: list[Structure], tmp_path: Path) -> None:
    build_graphs(small_structures, cache_dir=tmp_path, progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".mxg"]


def test_bad_worker_count_is_a_config_error(small_structures: list[Structure]) -> None:
    with pytest.raises(ConfigError, match="num_workers"):
        build_graphs(small_structures, num_workers=0)


def test_cache_stores_compact_arrays(small_structures: list[Structure], tmp_path: Path) -> None:
    build_graphs(small_structures[:1], cache_dir=tmp_path, progress=False)
    graph = build_graph(small_structures[0])
    n_atoms, n_edges = graph.num_nodes, graph.edge_index.size(1)
    header = 4 + 8 + 8 + 4
    # uint8 numbers, int32 edge indices, float32 vectors; no line graph on disk.
    assert cache_files(tmp_path)[0].stat().st_size == header + n_atoms + 8 * n_edges + 12 * n_edges


def test_atom_count_limit(small_structures: list[Structure]) -> None:
    from matxfer.errors import DataError, MatxferError

    sizes = [len(s) for s in small_structures]
    limit = max(sizes) - 1
    with pytest.raises(DataError) as caught:
        build_graphs(
            small_structures, progress=False, ids=[f"s{i}" for i in sizes], max_atoms=limit
        )
    too_big = [i for i, n in enumerate(sizes) if n > limit]
    assert [p.index for p in caught.value.problems] == too_big
    assert f"over the limit of {limit}" in caught.value.problems[0].reason
    assert caught.value.problems[0].record_id == f"s{sizes[too_big[0]]}"
    largest = small_structures[too_big[0]]
    with pytest.raises(MatxferError, match=f"over the limit of {limit}"):
        build_graph(largest, max_atoms=limit)
    assert build_graph(largest).num_nodes == len(largest)


def test_dropped_graph_fields_still_load_and_keep_cache_keys() -> None:
    # cutoff and cutoff_step never changed a graph: old configs and checkpoints naming
    # them still load, and the cache token is the one format 1 wrote with them, so
    # graphs cached before they were dropped are still found.
    old = {"cutoff": 8.0, "max_neighbors": 12, "cutoff_step": 1.0, "line_graph": True}
    assert GraphConfig.model_validate(old) == GraphConfig()
    assert GraphConfig().cache_token() == (
        'v1:{"neighbor_strategy":"k-nearest","cutoff":8.0,"max_neighbors":12,'
        '"max_cutoff":30.0,"cutoff_step":1.0,"line_graph":true}'
    )
    assert "cutoff" not in GraphConfig().model_dump()
