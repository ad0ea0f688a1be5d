"""ALIGNN in PyTorch Geometric, with reference-checkpoint loading.

Public API: :class:`ALIGNN` (the model), its blocks :class:`ALIGNNConv`,
:class:`EdgeGatedGraphConv`, :class:`MLPHead`, :class:`MLPLayer`,
:class:`RBFExpansion`, and :func:`load_reference_checkpoint`.
"""

from matxfer.models.alignn import ALIGNN
from matxfer.models.alignn_conv import ALIGNNConv
from matxfer.models.edge_gated_conv import EdgeGatedGraphConv
from matxfer.models.features import RBFExpansion, cgcnn_feature_table
from matxfer.models.mlp import MLPHead, MLPLayer
from matxfer.models.reference import load_reference_checkpoint

__all__ = [
    "ALIGNN",
    "ALIGNNConv",
    "EdgeGatedGraphConv",
    "MLPHead",
    "MLPLayer",
    "RBFExpansion",
    "cgcnn_feature_table",
    "load_reference_checkpoint",
]
