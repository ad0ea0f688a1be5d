"""Builders of test inputs shared across test packages."""

from __future__ import annotations

from pymatgen.core import Structure

#: 1 + 1 layers of width 16: a model that trains in seconds on a CPU.
TINY_MODEL: dict = {
    "alignn_layers": 1,
    "gcn_layers": 1,
    "hidden_features": 16,
    "embedding_features": 16,
    "edge_input_features": 16,
    "triplet_input_features": 8,
}


def jarvis_atoms(structure: Structure) -> dict:
    """The JARVIS/ALIGNN ``atoms`` dict of ``structure`` (fractional coordinates)."""
    return {
        "lattice_mat": structure.lattice.matrix.tolist(),
        "coords": structure.frac_coords.tolist(),
        "elements": [site.specie.symbol for site in structure],
        "cartesian": False,
    }


def alignn_entry(
    structure: Structure, jid: object = 1, target: object = 0.5, **extra: object
) -> dict:
    """An ALIGNN/JARVIS record of ``structure``; ``extra`` fields go before ``atoms``."""
    return {"jid": jid, "target": target, **extra, "atoms": jarvis_atoms(structure)}
