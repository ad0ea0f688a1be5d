"""CHGNet's pre-trained representation with a property head (``finetune --from chgnet``).

CHGNet (Deng et al., *Nat. Mach. Intell.* 5, 1031, 2023) is a graph network
pre-trained on MPtrj: about 1.58 M structures from the relaxation trajectories
of the Materials Project, fitted to energies, forces, stresses and magnetic
moments. The ``chgnet`` wheel (an optional dependency, ``pip install
"matxfer[chgnet]"``) ships the weights, so loading them needs no network.

:class:`CHGNetRegressor` keeps CHGNet's graphs and layers up to its readout and
replaces the energy readout with matxfer's :class:`~matxfer.models.MLPHead`:

.. math::

    h_i = \\mathrm{LN}\\big(\\mathrm{CHGNet}_{\\le\\mathrm{last\\ conv}}(G)_i\\big),\\qquad
    \\hat y = \\mathrm{MLP}\\Big(\\frac{1}{N}\\sum_{i=1}^{N} h_i\\Big)

Mean pooling, not CHGNet's sum: its energy readout applies the MLP per atom and
sums (an extensive energy), while the study's targets are intensive. CHGNet's
energy MLP, its site-wise magnetic-moment layer and its fixed composition
(atom-reference) model predict nothing here and are removed.

Graphs are CHGNet's own (:class:`chgnet.graph.CrystalGraphConverter`: atom graph
within 6 Å, bond graph of bonds within 3 Å), wrapped one per crystal in a PyG
:class:`~torch_geometric.data.Data` (attribute ``chgnet_graph``), so matxfer's
loaders, labels and Lightning loop carry them unchanged (PyG batches an object
attribute as a list). They are not cached on disk: the converter takes about
4 ms per crystal of the study's small datasets, negligible next to training.

Layer groups (:data:`LAYER_GROUP_PATTERNS`, used by :mod:`matxfer.transfer.freeze`):

==============  ==============================================================
group           CHGNet modules (under ``backbone.``)
==============  ==============================================================
``embedding``   atom, bond and angle embeddings and their basis expansions
``two_body``    ``atom_conv_layers`` (atoms updated over bonds)
``three_body``  ``bond_conv_layers``, ``angle_layers`` (bonds over angles)
``gcn``         none (CHGNet has no separate atom-graph block)
``head``        the readout: ``backbone.readout_norm`` and the new ``head``
==============  ==============================================================

As in CHGNet itself, the output of the last angle update is never read (only
the final atom convolution follows it), so that layer gets no gradient.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pymatgen.core import Element, Structure
from torch import Tensor, nn
from torch_geometric.data import Data

from matxfer.errors import DataError, MatxferError, MissingDependencyError, Problem
from matxfer.models.mlp import MLPHead

if TYPE_CHECKING:
    from chgnet.model import CHGNet

#: The CHGNet release matxfer's ``chgnet`` extra pins (its weights are the pre-training).
CHGNET_VERSION = "0.4.2"
#: The weights of that release used as the pre-training source (CHGNet's default model).
CHGNET_WEIGHTS = "0.3.0"
#: Hidden blocks and their width in the default head (CHGNet's own readout MLP is 64 wide).
HEAD_HIDDEN_LAYERS, HEAD_HIDDEN_FEATURES = 2, 64
#: What the missing dependency error tells the user to run.
INSTALL_HINT = 'pip install "matxfer[chgnet]"'

#: Module path → layer group (see the module docstring); names start at the model root.
LAYER_GROUP_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"^backbone\.(atom_embedding|bond_basis_expansion|bond_embedding|bond_weights_ag"
            r"|bond_weights_bg|angle_basis_expansion|angle_embedding)(\.|$)"
        ),
        "embedding",
    ),
    (re.compile(r"^backbone\.atom_conv_layers(\.|$)"), "two_body"),
    (re.compile(r"^backbone\.(bond_conv_layers|angle_layers)(\.|$)"), "three_body"),
    (re.compile(r"^(backbone\.readout_norm|head)(\.|$)"), "head"),
)

#: CHGNet parts that predict energy, magnetic moments or composition energies, not used here.
_UNUSED = ("mlp", "site_wise", "composition_model", "pooling")


def require_chgnet() -> Any:
    """The ``chgnet`` package, or a one-line error saying how to install it.

    Raises:
        MissingDependencyError: ``chgnet`` is not installed.
    """
    try:
        import chgnet
    except ImportError:
        raise MissingDependencyError(
            f"the CHGNet pre-training source needs the optional dependency chgnet=="
            f"{CHGNET_VERSION}: {INSTALL_HINT}"
        ) from None
    return chgnet


def chgnet_version() -> str:
    """Installed ``chgnet`` version (checked importable first)."""
    require_chgnet()
    return metadata.version("chgnet")


def weights_file() -> Path:
    """The pre-trained weights file inside the installed ``chgnet`` package."""
    package = Path(require_chgnet().__file__).parent
    files = sorted((package / "pretrained" / CHGNET_WEIGHTS).glob("*.pth.tar"))
    if not files:
        raise MatxferError(
            f"the installed chgnet {chgnet_version()} ships no v{CHGNET_WEIGHTS} weights under "
            f"{package / 'pretrained'}; reinstall it: {INSTALL_HINT}"
        )
    return files[0]


def _quietly(build: Callable[[], CHGNet]) -> CHGNet:
    """Run ``build`` without CHGNet's "initialized with N parameters" print."""
    with contextlib.redirect_stdout(io.StringIO()):
        return build()


class CHGNetRegressor(nn.Module):
    """CHGNet's representation, mean-pooled, then an :class:`MLPHead` (see module docstring).

    Args:
        num_outputs: Properties predicted.
        chgnet_args: CHGNet constructor arguments (its ``model_args``; default:
            CHGNet's defaults; :meth:`from_pretrained` uses those of the shipped weights).
        head_hidden_layers: Hidden blocks of the head (default: ``2``).
        head_hidden_features: Their width (default: ``64``).
        head_norm: Their normalisation (default: ``"none"``).

    Shapes:
        A PyG batch of :meth:`featurize` graphs → ``[B, num_outputs]``.
    """

    #: Read by :func:`matxfer.transfer.freeze.parameter_groups`.
    layer_group_patterns = LAYER_GROUP_PATTERNS

    def __init__(
        self,
        num_outputs: int = 1,
        chgnet_args: dict[str, Any] | None = None,
        head_hidden_layers: int = HEAD_HIDDEN_LAYERS,
        head_hidden_features: int = HEAD_HIDDEN_FEATURES,
        head_norm: str = "none",
    ) -> None:
        super().__init__()
        require_chgnet()
        from chgnet.model import CHGNet

        args = dict(chgnet_args or {})
        # The weights are loaded afterwards; the atom-reference model is unused anyway.
        args["composition_model"] = None
        backbone = _quietly(lambda: CHGNet(**args))
        self._adopt(backbone)
        self.head = MLPHead(
            backbone.atom_fea_dim, num_outputs, head_hidden_layers, head_hidden_features, head_norm
        )

    def _adopt(self, backbone: CHGNet) -> None:
        """Keep ``backbone`` without the parts that predict energies (see ``_UNUSED``)."""
        for name in _UNUSED:
            if hasattr(backbone, name):
                delattr(backbone, name)
        self.chgnet_args = {
            k: v for k, v in backbone.model_args.items() if k != "composition_model"
        }
        self.backbone = backbone

    @classmethod
    def from_pretrained(
        cls, num_outputs: int = 1, seed: int | None = None, **head: Any
    ) -> CHGNetRegressor:
        """CHGNet with the weights shipped in its wheel (offline) and a fresh head.

        Args:
            num_outputs: Properties predicted.
            seed: Seed of the head's initial weights (``None``: torch's global generator,
                left untouched otherwise).
            head: ``head_hidden_layers``, ``head_hidden_features``, ``head_norm``.
        """
        path = weights_file()
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = cls(num_outputs, {**state["model_args"], "version": CHGNET_WEIGHTS}, **head)
        weights = state["state_dict"]
        kept = {k: v for k, v in weights.items() if k.split(".")[0] not in _UNUSED}
        model.backbone.load_state_dict(kept, strict=True)  # every kept CHGNet weight
        return model

    def config_dict(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-able) that rebuild this architecture."""
        head = self.head.config_dict()
        return {
            "num_outputs": head["num_outputs"],
            "chgnet_args": {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.chgnet_args.items()
            },
            "head_hidden_layers": head["hidden_layers"],
            "head_hidden_features": head["hidden_features"],
            "head_norm": head["norm"],
        }

    @classmethod
    def from_config_dict(cls, config: dict[str, Any]) -> CHGNetRegressor:
        """A freshly initialised model from :meth:`config_dict` output (weights loaded later)."""
        return cls(**config)

    def featurize(
        self,
        structures: Sequence[Structure],
        progress: bool = False,
        ids: Sequence[str] | None = None,
    ) -> list[Data]:
        """CHGNet's graphs of ``structures``, one PyG ``Data`` (``chgnet_graph``) each.

        Args:
            structures: The crystals.
            progress: Unused (conversion is fast); accepted like matxfer's graph builder.
            ids: Names of the structures, for the error below.

        Raises:
            DataError: Structures hold elements beyond CHGNet's embedding (each named).
            MatxferError: CHGNet cannot build a structure's graph (naming it).
        """
        names = [f"structure #{i}" for i in range(len(structures))] if ids is None else list(ids)
        self._check_elements(structures, names)
        converter = self.backbone.graph_converter
        out = []
        for structure, name in zip(structures, names, strict=True):
            try:
                graph = converter(structure, graph_id=name)
            except Exception as error:  # CHGNet raises plain exceptions; name the crystal
                raise MatxferError(f"{name}: CHGNet cannot build its graph ({error})") from None
            # The converter marks coordinates and lattice for force gradients; property
            # regression needs none, and cached graphs must not accumulate gradients.
            graph.atom_frac_coord = graph.atom_frac_coord.detach()
            graph.lattice = graph.lattice.detach()
            out.append(Data(chgnet_graph=graph, num_nodes=len(structure)))
        return out

    def _check_elements(self, structures: Sequence[Structure], names: list[str]) -> None:
        """CHGNet embeds Z 1-94 only (its MPtrj elements); a heavier atom would index past
        its embedding table, so name every structure holding one instead."""
        max_z = self.backbone.atom_embedding.embedding.num_embeddings
        problems = []
        for index, (structure, name) in enumerate(zip(structures, names, strict=True)):
            heavy = {z for z in structure.atomic_numbers if z > max_z}
            if heavy:
                symbols = ", ".join(Element.from_Z(z).symbol for z in sorted(heavy))
                reason = f"element(s) {symbols} beyond CHGNet's Z 1-{max_z}"
                problems.append(Problem("input", index, name, reason))
        if problems:
            raise DataError(
                f"{len(problems)} of {len(structures)} structures hold elements CHGNet cannot "
                "embed; drop them, or use an ALIGNN model (Z 1-100)",
                problems,
            )

    def crystal_features(self, batch: Data) -> Tensor:
        """Mean-pooled atom features after CHGNet's last convolution, ``[B, 64]``.

        Follows ``CHGNet._compute`` (chgnet 0.4.2) up to its readout.
        """
        from chgnet.model.model import BatchedGraph

        net = self.backbone
        device = self.head.out.weight.device
        graphs = [graph.to(device) for graph in batch.chgnet_graph]
        with warnings.catch_warnings():
            # BatchedGraph builds its volume tensor from tensors; harmless.
            warnings.filterwarnings("ignore", message=r".*To copy construct from a tensor.*")
            g = BatchedGraph.from_graphs(
                graphs, net.bond_basis_expansion, net.angle_basis_expansion
            )
        atoms = net.atom_embedding(g.atomic_numbers - 1)  # row 0 is hydrogen
        bonds = net.bond_embedding(g.bond_bases_ag)
        weights_ag = net.bond_weights_ag(g.bond_bases_ag)
        weights_bg = net.bond_weights_bg(g.bond_bases_bg)
        has_angles = len(g.angle_bases) != 0
        angles = net.angle_embedding(g.angle_bases) if has_angles else None
        atom_graph = {
            "atom_graph": g.batched_atom_graph,
            "directed2undirected": g.directed2undirected,
        }
        for atom_layer, bond_layer, angle_layer in zip(
            net.atom_conv_layers[:-1], net.bond_conv_layers, net.angle_layers, strict=True
        ):
            atoms = atom_layer(
                atom_feas=atoms, bond_feas=bonds, bond_weights=weights_ag, **atom_graph
            )
            if has_angles:
                bonds = bond_layer(
                    atom_feas=atoms,
                    bond_feas=bonds,
                    bond_weights=weights_bg,
                    angle_feas=angles,
                    bond_graph=g.batched_bond_graph,
                )
                angles = angle_layer(
                    atom_feas=atoms, bond_feas=bonds, angle_feas=angles,
                    bond_graph=g.batched_bond_graph,
                )  # fmt: skip
        atoms = net.atom_conv_layers[-1](
            atom_feas=atoms, bond_feas=bonds, bond_weights=weights_ag, **atom_graph
        )
        if net.readout_norm is not None:
            atoms = net.readout_norm(atoms)
        owners = g.atom_owners.long()
        counts = torch.bincount(owners, minlength=len(graphs)).clamp(min=1).to(atoms.dtype)
        pooled = atoms.new_zeros(len(graphs), atoms.shape[1]).index_add_(0, owners, atoms)
        return pooled / counts.unsqueeze(1)

    def forward(self, batch: Data) -> Tensor:
        """Predictions ``[B, num_outputs]`` (transformed units)."""
        return self.head(self.crystal_features(batch))
