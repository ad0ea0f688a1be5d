"""Foundation models as pre-training sources: ``matxfer finetune DATA --from chgnet``.

A foundation model is pre-trained by others on far more data than the study's
pools and ships its weights with its package. Named in ``--from`` (when no file
or folder of that name exists), it is fine-tuned like a matxfer checkpoint:
same head modes (except ``reuse``: its readout predicts energies, not the
property), same freezing strategies (its blocks mapped onto matxfer's layer
groups), same training loop and run directory. What differs is recorded:

* ``transfer.json``'s ``pretrained`` entry names the source, its package
  version and the sha256 of the weights file inside the package;
* the leakage audit cannot run (the pre-training data are not shipped), so the
  record and the model card carry the source's leakage note instead.

Sources: :data:`FOUNDATION_SOURCES` (``chgnet``: CHGNet 0.4.2 pre-trained on
MPtrj, see :mod:`matxfer.models.chgnet_backbone`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matxfer.data.transforms import TargetTransform
from matxfer.errors import ConfigError
from matxfer.graphs.config import GraphConfig
from matxfer.training.checkpoint import LoadedModel


@dataclass(frozen=True)
class FoundationSource:
    """A pre-trained model shipped by another package.

    Attributes:
        name: What ``--from`` names it by.
        description: Model, version, pre-training data, in words (model card).
        leakage_note: Why and how the fine-tuning data may overlap its pre-training data.
        target_names: What it was pre-trained to predict.
        load: ``(num_outputs, seed) -> LoadedModel`` with the pre-trained weights and a
            fresh head (its import fails with an install hint when the package is missing).
        lr_scale: Factor on the config's learning rate (every layer group's) when
            fine-tuning this model: its weights need other steps than matxfer's.
    """

    name: str
    description: str
    leakage_note: str
    target_names: tuple[str, ...]
    load: Callable[[int, int | None], LoadedModel]
    lr_scale: float = 1.0

    def leakage_entry(self) -> dict[str, Any]:
        """``transfer.json``'s leakage entry: not audited, with the note as the reason."""
        return {"audited": False, "reason": self.leakage_note, "source": self.name}

    def record(self, loaded: LoadedModel) -> dict[str, Any]:
        """``transfer.json``'s ``pretrained`` entry (no matxfer graph config: its own graphs)."""
        from matxfer.transfer.pretrained import checkpoint_sha256

        return {
            "source": self.name,
            "description": self.description,
            "checkpoint": str(loaded.path.resolve()),
            "sha256": checkpoint_sha256(loaded.path),
            "target_names": list(self.target_names),
            "epoch": None,
            "graph_config": None,
            "model_config": loaded.info.get("model_config"),
            "package_version": loaded.info.get("package_version"),
        }


def _load_chgnet(num_outputs: int, seed: int | None) -> LoadedModel:
    from matxfer.models.chgnet_backbone import (
        CHGNetRegressor,
        chgnet_version,
        weights_file,
    )

    model = CHGNetRegressor.from_pretrained(num_outputs, seed)
    return LoadedModel(
        model=model,
        transform=TargetTransform("none", num_outputs),  # unused: FT fits its own
        graph_config=GraphConfig(),  # unused: the model builds CHGNet's graphs
        target_names=list(CHGNET.target_names),
        path=weights_file(),
        info={
            "model_class": type(model).__name__,
            "model_config": model.config_dict(),
            "package_version": chgnet_version(),
        },
    )


CHGNET = FoundationSource(
    name="chgnet",
    description=(
        "CHGNet 0.4.2 (weights v0.3.0, Deng et al., Nat. Mach. Intell. 2023), pre-trained on "
        "MPtrj: about 1.58 M structures of Materials Project relaxation trajectories with "
        "their DFT energies, forces, stresses and magnetic moments; CHGNet's own graphs "
        "(atom graph 6 Å, bond graph 3 Å), mean-pooled features, a new head"
    ),
    leakage_note=(
        "CHGNet's pre-training data (MPtrj, Materials Project relaxation trajectories) are "
        "not shipped, so no audit: fine-tuning data derived from the Materials Project "
        "(the study's fe, bg, gv, ph, dc, pz, and ebg's structures) likely share crystals, "
        "test crystals included, with it; its labels are energies, forces, stresses and "
        "magnetic moments, not the fine-tuned property, but scores on MP-derived targets "
        "may be optimistic"
    ),
    target_names=("energy_per_atom", "forces", "stress", "magmom"),
    load=_load_chgnet,
    # At matxfer's rates (1e-3) CHGNet under-fits: on phonons at size 100 (trial 1, seed 0)
    # training R² 0.72, validation 0.66; at 1e-2, 0.99 and 0.94 (README, Transfer learning).
    lr_scale=10.0,
)

#: Foundation models ``--from`` accepts by name.
FOUNDATION_SOURCES: dict[str, FoundationSource] = {CHGNET.name: CHGNET}


def foundation_source(pretrained: str | Path) -> FoundationSource | None:
    """The foundation model ``pretrained`` names, or ``None`` for a run dir or checkpoint.

    A file or folder of that name in the working directory wins (it is what the
    user meant by a path).
    """
    name = str(pretrained)
    if name.lower() not in FOUNDATION_SOURCES or Path(name).exists():
        return None
    return FOUNDATION_SOURCES[name.lower()]


def check_foundation_options(source: FoundationSource, head: str, exclude_test: bool) -> None:
    """Refuse options a foundation source cannot honour, saying what to use instead.

    Raises:
        ConfigError: ``head="reuse"`` or ``exclude_test_structures``.
    """
    if head == "reuse":
        raise ConfigError(
            f"--from {source.name}: its pre-trained readout predicts "
            f"{', '.join(source.target_names)}, not a property, so it cannot be reused; "
            "use --head new (the default for a foundation model) or --head deeper"
        )
    if exclude_test:
        raise ConfigError(
            f"--from {source.name}: its pre-training cannot be repeated without the test "
            "crystals (its data are not shipped); drop --exclude-test-structures"
        )


def retitle_model_card(text: str, source: str | None) -> str:
    """``MODEL_CARD.md`` text whose title names a foundation ``source``'s model, not ALIGNN
    (unchanged for ``None``: a matxfer checkpoint)."""
    if source is None:
        return text
    return text.replace(
        "ALIGNN property model",
        f"Property model on the pre-trained {source} representation (the config's model "
        "and graph sections are unused; transfer.json's model_config describes it)",
        1,
    )
