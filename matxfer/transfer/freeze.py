"""Fine-tuning strategies as data: which layer groups of ALIGNN train.

A pre-trained (PT) ALIGNN is fine-tuned (FT) on a new property with some of
its layers frozen. Devi, Butler & Sai Gautam (npj Comput Mater 2024,
arXiv 2406.13142) compare unfreezing everything (their best strategy) with
training only the 2-body or only the 3-body interaction layers. Here a
strategy is a :class:`FreezeSpec` naming frozen *layer groups*, so every
variant is one value, not one script:

=============  ============================================================
group          parameters (module paths of :class:`matxfer.models.ALIGNN`)
=============  ============================================================
``embedding``  ``atom_embedding``, ``edge_embedding``, ``angle_embedding``
``two_body``   ``alignn_layers[i].node_update`` (atom-graph, bond-gated conv)
``three_body`` ``alignn_layers[i].edge_update`` (line-graph, angle-gated conv)
``gcn``        ``gcn_layers`` (atom-graph convs after the ALIGNN layers)
``head``       ``head`` (readout MLP)
=============  ============================================================

Another architecture brings its own mapping onto these groups (a
``layer_group_patterns`` attribute, see :func:`group_patterns`; CHGNet's is in
:mod:`matxfer.models.chgnet_backbone`).

The presets ``two_body_only`` and ``three_body_only`` are this package's
reading of the study's 2-body and 3-body variants: the GCN layers are
atom-graph (2-body) convolutions too, so they train with ``two_body``; the
embeddings stay frozen in both (see :data:`PRESETS`).

Every parameter of the model must fall in exactly one group
(:func:`parameter_groups` raises otherwise), so a submodule added later cannot
silently escape a freeze.

Frozen BatchNorm layers would still update their running statistics in train
mode. :func:`apply_freeze` therefore installs a forward pre-hook on the model
that puts frozen normalisation layers back into eval mode at every forward
pass in train mode (so ``model.train()`` from Lightning or elsewhere cannot
undo it); :func:`freeze_batchnorm_stats` does the same once, for callers that
prefer to call it themselves (e.g. in ``on_train_epoch_start``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from torch import Tensor, nn

from matxfer.errors import ConfigError, MatxferError

Group = Literal["embedding", "two_body", "three_body", "gcn", "head"]
#: All layer groups, input to output.
GROUPS: tuple[Group, ...] = get_args(Group)

# Module-path prefix → group. A name belongs to a group when it is the prefix
# itself or continues it with ".".
_GROUP_PATTERNS: tuple[tuple[re.Pattern[str], Group], ...] = (
    (re.compile(r"^(atom_embedding|edge_embedding|angle_embedding)(\.|$)"), "embedding"),
    (re.compile(r"^alignn_layers\.\d+\.node_update(\.|$)"), "two_body"),
    (re.compile(r"^alignn_layers\.\d+\.edge_update(\.|$)"), "three_body"),
    (re.compile(r"^gcn_layers(\.|$)"), "gcn"),
    (re.compile(r"^head(\.|$)"), "head"),
)


#: (pattern, group) pairs mapping module paths to layer groups.
GroupPatterns = tuple[tuple[re.Pattern[str], Group], ...]


def group_patterns(model: nn.Module) -> GroupPatterns:
    """The layer-group patterns of ``model``: its ``layer_group_patterns`` attribute (another
    architecture, e.g. :class:`~matxfer.models.chgnet_backbone.CHGNetRegressor`) or ALIGNN's."""
    return getattr(model, "layer_group_patterns", _GROUP_PATTERNS)


def group_of(name: str, patterns: GroupPatterns = _GROUP_PATTERNS) -> Group | None:
    """Layer group of a parameter or module path (``None`` if none matches).

    Args:
        name: Dotted path as in ``model.named_parameters()``, e.g.
            ``"alignn_layers.0.edge_update.src_gate.weight"``.
        patterns: The model's patterns (:func:`group_patterns`; default: ALIGNN's).
    """
    for pattern, group in patterns:
        if pattern.match(name):
            return group
    return None


def parameter_groups(model: nn.Module) -> dict[str, Group]:
    """Map every parameter name of ``model`` to its layer group.

    Raises:
        MatxferError: If any parameter belongs to no group (listing them), so
            the freezing rules must be extended before such a model is used.
    """
    groups: dict[str, Group] = {}
    orphans: list[str] = []
    patterns = group_patterns(model)
    for name, _ in model.named_parameters():
        group = group_of(name, patterns)
        if group is None:
            orphans.append(name)
        else:
            groups[name] = group
    if orphans:
        raise MatxferError(
            f"{len(orphans)} parameter(s) belong to no layer group {list(GROUPS)}: "
            f"{orphans[:5]}; add their module path to the model's layer_group_patterns "
            "(ALIGNN: matxfer.transfer.freeze._GROUP_PATTERNS)"
        )
    return groups


class FreezeSpec(BaseModel):
    """Which layer groups stay fixed during fine-tuning.

    Args:
        frozen: Groups whose parameters are not trained (default: none, i.e.
            fine-tune everything).
        head_scope: Which part of an unfrozen head trains: ``"all"`` or
            ``"last_linear"`` (only the head's final :class:`~torch.nn.Linear`,
            the study's "last layer" strategy). ``"last_linear"`` with
            ``"head"`` frozen is contradictory and rejected.

    Example:
        ``FreezeSpec(frozen={"embedding", "three_body"})`` trains the 2-body
        convolutions, the GCN layers and the head.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    frozen: frozenset[Group] = frozenset()
    head_scope: Literal["all", "last_linear"] = "all"

    @model_validator(mode="after")
    def _something_trains(self) -> FreezeSpec:
        if self.head_scope == "last_linear" and "head" in self.frozen:
            raise ValueError("head_scope='last_linear' trains part of the head; do not freeze it")
        if self.frozen == frozenset(GROUPS):
            raise ValueError("every layer group is frozen: nothing would train")
        return self

    @property
    def trainable(self) -> tuple[Group, ...]:
        """Groups with at least some trainable parameters, input to output."""
        return tuple(g for g in GROUPS if g not in self.frozen)

    def __str__(self) -> str:
        for name, preset in PRESETS.items():
            if preset.spec == self:
                return name
        return "freeze:" + ",".join(g for g in GROUPS if g in self.frozen)


@dataclass(frozen=True)
class Preset:
    """A named strategy: its spec and what it means."""

    spec: FreezeSpec
    description: str


_ALL_BUT_HEAD: frozenset[Group] = frozenset(GROUPS) - {"head"}

#: Named strategies accepted by :func:`parse_freeze`. "Only" presets also keep
#: the embeddings frozen: the interactions adapt, the input encodings do not.
PRESETS: dict[str, Preset] = {
    "all": Preset(FreezeSpec(), "fine-tune every layer (the study's best strategy)"),
    "last": Preset(
        FreezeSpec(frozen=_ALL_BUT_HEAD, head_scope="last_linear"),
        "train only the head's final Linear layer; everything else frozen",
    ),
    "head": Preset(
        FreezeSpec(frozen=_ALL_BUT_HEAD), "train the whole head; everything else frozen"
    ),
    "two_body_only": Preset(
        FreezeSpec(frozen=frozenset({"embedding", "three_body"})),
        "train the 2-body (atom-graph) interactions: ALIGNN node updates, GCN layers, and the"
        " head; embeddings and 3-body line-graph convolutions frozen",
    ),
    "three_body_only": Preset(
        FreezeSpec(frozen=frozenset({"embedding", "two_body", "gcn"})),
        "train the 3-body (line-graph) interactions: ALIGNN edge updates and the head;"
        " embeddings, 2-body node updates and GCN layers frozen",
    ),
    "freeze_embedding": Preset(
        FreezeSpec(frozen=frozenset({"embedding"})), "train everything except the embeddings"
    ),
}


def _parse_groups(text: str, original: str) -> frozenset[Group]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        what = f"unknown group(s) {unknown}" if unknown else "no group named"
        raise ConfigError(f"fine-tuning strategy {original!r}: {what}; groups are {list(GROUPS)}")
    return frozenset(n for n in GROUPS if n in names)


def parse_freeze(text: str) -> FreezeSpec:
    """Parse a strategy from the command line.

    Accepted forms: a preset name (see :data:`PRESETS`: ``all``, ``last``,
    ``head``, ``two_body_only``, ``three_body_only``, ``freeze_embedding``),
    ``freeze:g1,g2`` (freeze these groups, train the rest) or ``train:g1,g2``
    (train these groups, freeze the rest), with groups from :data:`GROUPS`.

    Raises:
        ConfigError: Naming the accepted presets, forms and groups.
    """
    key = text.strip()
    if key in PRESETS:
        return PRESETS[key].spec
    kind, sep, rest = key.partition(":")
    if sep and kind in ("freeze", "train"):
        groups = _parse_groups(rest, text)
        try:
            return FreezeSpec(frozen=groups if kind == "freeze" else frozenset(GROUPS) - groups)
        except ValidationError as error:
            reason = error.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"fine-tuning strategy {text!r}: {reason}") from None
    raise ConfigError(
        f"unknown fine-tuning strategy {text!r}; use one of {list(PRESETS)}, "
        f"'freeze:<groups>' or 'train:<groups>' with groups from {list(GROUPS)}"
    )


def _last_linear_names(model: nn.Module) -> set[str]:
    """Parameter names of the last :class:`~torch.nn.Linear` registered in ``model.head``."""
    head = getattr(model, "head", None)
    linears = [name for name, m in head.named_modules() if isinstance(m, nn.Linear)] if head else []
    if not linears:
        raise MatxferError("strategy 'last' needs a model.head with at least one nn.Linear")
    prefix = "head." + linears[-1] if linears[-1] else "head"
    return {f"{prefix}.{name}" for name, _ in head.get_submodule(linears[-1]).named_parameters()}


def _is_trainable(name: str, group: Group, spec: FreezeSpec, last_linear: set[str]) -> bool:
    if group in spec.frozen:
        return False
    return not (group == "head" and spec.head_scope == "last_linear" and name not in last_linear)


def _frozen_norm_names(model: nn.Module, spec: FreezeSpec) -> list[str]:
    """Modules with running statistics (BatchNorm, InstanceNorm) in frozen parts."""
    names = []
    patterns = group_patterns(model)
    for name, module in model.named_modules():
        if not isinstance(getattr(module, "running_mean", None), Tensor):
            continue
        group = group_of(name, patterns)
        if group in spec.frozen or (group == "head" and spec.head_scope == "last_linear"):
            names.append(name)
    return names


def freeze_batchnorm_stats(model: nn.Module, spec: FreezeSpec) -> list[str]:
    """Put the normalisation layers of frozen groups into eval mode.

    In eval mode BatchNorm normalises with its stored running statistics and
    does not update them, so a frozen group stays bit-identical and computes
    what it computed after pre-training. Call after every ``model.train()``
    (:func:`apply_freeze` installs a hook that does this automatically).

    Returns:
        Names of the modules set to eval mode.
    """
    names = _frozen_norm_names(model, spec)
    for name in names:
        model.get_submodule(name).eval()
    return names


class _FrozenNormGuard:
    """Forward pre-hook re-applying :func:`freeze_batchnorm_stats` in train mode.

    Holds module names, not modules, so it stays valid in a deep copy.
    """

    def __init__(self, norm_names: list[str]) -> None:
        self.norm_names = norm_names

    def __call__(self, module: nn.Module, args: Any) -> None:
        if module.training:
            for name in self.norm_names:
                module.get_submodule(name).eval()


@dataclass
class FreezeSummary:
    """Parameter counts per group after :func:`apply_freeze`."""

    spec: FreezeSpec
    trainable: dict[str, int] = field(default_factory=dict)
    frozen: dict[str, int] = field(default_factory=dict)
    frozen_norms: list[str] = field(default_factory=list)

    @property
    def num_trainable(self) -> int:
        return sum(self.trainable.values())

    @property
    def num_frozen(self) -> int:
        return sum(self.frozen.values())

    def __str__(self) -> str:
        parts = [f"{g}: {self.trainable.get(g, 0):,} trainable" for g in GROUPS]
        return (
            f"strategy {self.spec}: {self.num_trainable:,} trainable, {self.num_frozen:,} "
            f"frozen parameters ({'; '.join(parts)})"
        )


def apply_freeze(model: nn.Module, spec: FreezeSpec, guard_norms: bool = True) -> FreezeSummary:
    """Set ``requires_grad`` of every parameter of ``model`` according to ``spec``.

    Idempotent: parameters not frozen by ``spec`` are made trainable again,
    and a previously installed norm guard is replaced.

    Args:
        model: An ALIGNN (or any module following its naming).
        spec: The strategy.
        guard_norms: Install a forward pre-hook that keeps the normalisation
            layers of frozen groups in eval mode (see module docstring).

    Returns:
        Per-group counts of trainable and frozen parameters.

    Raises:
        MatxferError: If a parameter belongs to no group, or the strategy
            needs a head Linear that the model lacks.
    """
    groups = parameter_groups(model)
    last_linear = _last_linear_names(model) if spec.head_scope == "last_linear" else set()
    summary = FreezeSummary(spec=spec)
    for name, param in model.named_parameters():
        group = groups[name]
        trainable = _is_trainable(name, group, spec, last_linear)
        param.requires_grad_(trainable)
        counts = summary.trainable if trainable else summary.frozen
        counts[group] = counts.get(group, 0) + param.numel()
    # nn.Module has no public API to find a hook again; remove our own guards by type.
    hooks = model._forward_pre_hooks
    for key in [k for k, hook in hooks.items() if isinstance(hook, _FrozenNormGuard)]:
        del hooks[key]
    summary.frozen_norms = freeze_batchnorm_stats(model, spec)
    if guard_norms and summary.frozen_norms:
        model.register_forward_pre_hook(_FrozenNormGuard(summary.frozen_norms))
    return summary


def parse_lr_multipliers(text: str) -> dict[Group, float]:
    """Parse ``"embedding=0.1,head=10"`` into per-group learning-rate factors.

    Raises:
        ConfigError: On an unknown group or a value that is not a number >= 0.
    """
    out: dict[Group, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        group, sep, value = item.partition("=")
        group = group.strip()
        if not sep or group not in GROUPS:
            raise ConfigError(
                f"learning-rate multiplier {item!r}: expected <group>=<factor> with group from "
                f"{list(GROUPS)}"
            )
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if not factor >= 0:
            raise ConfigError(f"learning-rate multiplier {item!r}: factor must be a number >= 0")
        out[group] = factor  # type: ignore[index]
    return out


def param_groups(
    model: nn.Module,
    base_lr: float,
    multipliers: Mapping[str, float] | None = None,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one per layer group (discriminative fine-tuning).

    Only trainable parameters (``requires_grad``) are included, each in exactly
    one optimizer group; groups without trainable parameters are left out.

    Args:
        model: The model, after :func:`apply_freeze`.
        base_lr: Learning rate of groups without a multiplier.
        multipliers: Layer group → factor on ``base_lr`` (e.g.
            ``{"embedding": 0.1}``).
        weight_decay: Weight decay of every group.

    Returns:
        Dicts with ``params``, ``lr``, ``weight_decay`` and ``name`` (the layer
        group), ready for ``torch.optim.AdamW(...)``.

    Raises:
        ConfigError: If ``multipliers`` names an unknown group.
    """
    multipliers = dict(multipliers or {})
    unknown = sorted(set(multipliers) - set(GROUPS))
    if unknown:
        raise ConfigError(
            f"learning-rate multipliers for unknown group(s) {unknown}; groups are {list(GROUPS)}"
        )
    groups = parameter_groups(model)
    by_group: dict[Group, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for name, param in model.named_parameters():
        if param.requires_grad:
            by_group[groups[name]].append(param)
    return [
        {
            "params": params,
            "lr": base_lr * multipliers.get(group, 1.0),
            "weight_decay": weight_decay,
            "name": group,
        }
        for group, params in by_group.items()
        if params
    ]
