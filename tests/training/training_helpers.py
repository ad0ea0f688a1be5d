"""Tiny synthetic crystals, targets and configs shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from builders import TINY_MODEL, jarvis_atoms
from pymatgen.core import Lattice, Structure

from matxfer.training.config import TrainConfig, resolve_config

ELEMENTS = ["Li", "Na", "Mg", "Al", "Si", "O", "Cl", "Ti", "Fe", "Cu"]


def synthetic_structures(count: int, seed: int = 0) -> list[Structure]:
    """Small rock-salt-like and one-atom cells with varied elements and sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        a = float(rng.uniform(3.2, 4.6))
        first, second = rng.choice(ELEMENTS, size=2, replace=False)
        if rng.random() < 0.5:
            structure = Structure(Lattice.cubic(a), [str(first)], [[0, 0, 0]])
        else:
            structure = Structure(
                Lattice.cubic(a), [str(first), str(second)], [[0, 0, 0], [0.5, 0.5, 0.5]]
            )
        out.append(structure)
    return out


def smooth_target(structure: Structure) -> float:
    """A learnable function of composition and volume, offset far from 0 so that
    predictions left in transformed units would stand out."""
    mean_z = float(np.mean([site.specie.Z for site in structure]))
    return 100.0 + 0.05 * structure.volume / len(structure) + 0.1 * mean_z


def write_alignn_json(path: Path, structures: list[Structure], labelled: bool = True) -> Path:
    """Write structures in the JARVIS/ALIGNN JSON layout (targets from :func:`smooth_target`)."""
    items = []
    for index, structure in enumerate(structures):
        item = {
            "jid": f"syn-{index}",
            "atoms": jarvis_atoms(structure),
        }
        if labelled:
            item["target"] = smooth_target(structure)
        items.append(item)
    path.write_text(json.dumps(items))
    return path


def tiny_config(**overrides: object) -> TrainConfig:
    """1 + 1 layers, width 16, a few epochs: seconds on a CPU."""
    values: dict = {
        "model": {**TINY_MODEL},
        "epochs": 3,
        "batch_size": 8,
        "early_stopping_patience": None,
        "lr": 3e-3,
        "target_transform": "standardize",
    }
    values.update(overrides)
    return resolve_config("fast", values)
