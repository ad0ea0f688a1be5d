"""Fixed input featurisation of ALIGNN: atom feature table and RBF expansions.

Atom features are CGCNN's 92-dimensional binary encoding of element
properties (group, period, electronegativity, covalent radius, valence
electrons, ionisation energy, electron affinity, block, atomic volume):
T. Xie & J. C. Grossman, "Crystal Graph Convolutional Neural Networks for an
Accurate and Interpretable Prediction of Material Properties",
Phys. Rev. Lett. 120, 145301 (2018), doi:10.1103/PhysRevLett.120.145301
(MIT license). The table in ``cgcnn_features.json`` was taken unchanged from
jarvis-tools (NIST, ``jarvis/core/atom_init.json``), which the reference
ALIGNN reads for ``atom_features="cgcnn"``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import torch
from torch import Tensor, nn

#: Rows of the atom feature table: atomic numbers 0 (unused) to 118.
MAX_ATOMIC_NUMBER = 118
#: Highest atomic number with its own CGCNN features in jarvis-tools.
CGCNN_MAX_TABULATED = 100
CGCNN_NUM_FEATURES = 92


@cache
def _cgcnn_rows() -> tuple[tuple[float, ...], ...]:
    text = resources.files("matxfer.models").joinpath("cgcnn_features.json").read_text()
    features = json.loads(text)["features"]
    return tuple(
        tuple(float(bit) for bit in features[str(z)]) for z in range(1, CGCNN_MAX_TABULATED + 1)
    )


def cgcnn_feature_table() -> Tensor:
    """The CGCNN atom feature table indexed by atomic number.

    Row 0 is all zeros (no element). Elements beyond Z = 100 get the features
    of Z = 100, which is what jarvis-tools returns for them (with a printed
    warning), so models trained with the reference see the same inputs here.

    Returns:
        ``[MAX_ATOMIC_NUMBER + 1, 92]`` float32 tensor (a new copy each call).
    """
    tabulated = torch.tensor(_cgcnn_rows(), dtype=torch.float32)
    table = torch.zeros(MAX_ATOMIC_NUMBER + 1, CGCNN_NUM_FEATURES)
    table[1 : CGCNN_MAX_TABULATED + 1] = tabulated
    table[CGCNN_MAX_TABULATED + 1 :] = tabulated[-1]
    return table


class RBFExpansion(nn.Module):
    r"""Gaussian radial basis expansion of a scalar (bond length or cosine).

    .. math::
        e_k(d) = \exp\left(-\gamma\,(d - \mu_k)^2\right), \quad
        \mu_k = v_\min + k\,\frac{v_\max - v_\min}{K - 1}

    with :math:`\gamma = 1/\Delta\mu` when no length scale is given (the
    reference ALIGNN's choice; note :math:`1/\Delta\mu`, not
    :math:`1/\Delta\mu^2`) and :math:`\gamma = 1/\ell^2` otherwise.

    Args:
        vmin: First centre (default: ``0.0``).
        vmax: Last centre (default: ``8.0``).
        bins: Number of centres :math:`K` (default: ``40``).
        lengthscale: Gaussian width :math:`\ell`; ``None`` uses the centre
            spacing as above (default: ``None``).

    Shapes:
        input ``[M]`` → output ``[M, bins]``.
    """

    centers: Tensor

    def __init__(
        self, vmin: float = 0.0, vmax: float = 8.0, bins: int = 40, lengthscale: float | None = None
    ) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError(f"RBFExpansion needs bins >= 2, got {bins}")
        self.vmin = float(vmin)
        self.vmax = float(vmax)
        self.bins = int(bins)
        self.lengthscale = lengthscale
        self.register_buffer("centers", torch.linspace(self.vmin, self.vmax, self.bins))
        spacing = (self.vmax - self.vmin) / (self.bins - 1)
        self.gamma = 1.0 / spacing if lengthscale is None else 1.0 / float(lengthscale) ** 2

    def forward(self, distance: Tensor) -> Tensor:
        return torch.exp(-self.gamma * (distance.unsqueeze(-1) - self.centers) ** 2)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.vmin}, {self.vmax}, bins={self.bins})"
