"""Small dense building blocks: the normalisation resolver, MLP layers and the output head."""

from __future__ import annotations

import itertools
from typing import Literal, get_args

from torch import Tensor, nn

from matxfer.errors import ConfigError
from matxfer.models.ops.block_norm import linear_norm_silu

#: ``"batch"``: BatchNorm1d, as in the 2021 ALIGNN; ``"layer"``: LayerNorm, as in
#: the reference's pure-PyTorch ``alignn_atomwise_pure``; ``"none"``: identity.
NormKind = Literal["batch", "layer", "none"]
NORM_KINDS: tuple[str, ...] = get_args(NormKind)


def check_norm(norm: str) -> NormKind:
    """Return ``norm`` if it names a normalisation, else raise listing the choices."""
    if norm not in NORM_KINDS:
        raise ConfigError(f"unknown norm {norm!r}; choose one of {list(NORM_KINDS)}")
    return norm  # type: ignore[return-value]


def make_norm(norm: str, features: int) -> nn.Module:
    """The normalisation layer named by ``norm`` (the one place the string is resolved).

    Args:
        norm: One of :data:`NORM_KINDS`.
        features: Feature width.
    """
    kind = check_norm(norm)
    if kind == "batch":
        return nn.BatchNorm1d(features)
    if kind == "layer":
        return nn.LayerNorm(features)
    return nn.Identity()


def reset_module(module: nn.Module) -> None:
    """Re-initialise a leaf module's parameters (BatchNorm: also its running statistics)."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()


class MLPLayer(nn.Module):
    r"""Linear layer, normalisation and SiLU: :math:`\mathrm{SiLU}(\mathrm{Norm}(W x + b))`.

    Args:
        in_features: Input width.
        out_features: Output width.
        norm: Normalisation, one of :data:`NORM_KINDS` (default: ``"batch"``).

    Shapes:
        ``[M, in_features]`` → ``[M, out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, norm: str = "batch") -> None:
        super().__init__()
        self.norm_kind = check_norm(norm)
        self.linear = nn.Linear(in_features, out_features)
        self.norm = make_norm(norm, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_module(self.linear)
        reset_module(self.norm)

    def forward(self, x: Tensor) -> Tensor:
        return linear_norm_silu(x, self.linear.weight, self.linear.bias, self.norm)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.linear.in_features}, "
            f"{self.linear.out_features}, norm={self.norm_kind!r})"
        )


class MLPHead(nn.Module):
    r"""Output head: ``hidden_layers`` :class:`MLPLayer` blocks, then a Linear to the outputs.

    With ``hidden_layers=0`` this is the reference ALIGNN's ``fc`` layer,
    :math:`\hat y = W h + b`. Transfer learning replaces or deepens it, so it
    is its own module: ``model.head = MLPHead(256, 3, hidden_layers=2)``.

    Args:
        in_features: Width of the pooled graph features.
        num_outputs: Number of predicted properties :math:`P`.
        hidden_layers: Number of hidden MLP blocks before the output (default: ``0``).
        hidden_features: Width of the hidden blocks; ``None`` uses ``in_features``
            (default: ``None``).
        norm: Normalisation in the hidden blocks (default: ``"none"``).

    Shapes:
        ``[B, in_features]`` → ``[B, num_outputs]``.
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: int = 1,
        hidden_layers: int = 0,
        hidden_features: int | None = None,
        norm: str = "none",
    ) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ConfigError(f"num_outputs must be >= 1, got {num_outputs}")
        if hidden_layers < 0:
            raise ConfigError(f"hidden_layers must be >= 0, got {hidden_layers}")
        self.in_features = in_features
        self.num_outputs = num_outputs
        self.hidden_features = in_features if hidden_features is None else hidden_features
        self.norm_kind = check_norm(norm)
        widths = [in_features] + [self.hidden_features] * hidden_layers
        self.hidden = nn.ModuleList(
            MLPLayer(w_in, w_out, norm) for w_in, w_out in itertools.pairwise(widths)
        )
        self.out = nn.Linear(widths[-1], num_outputs)
        self.reset_parameters()

    @property
    def hidden_layers(self) -> int:
        return len(self.hidden)

    def reset_parameters(self) -> None:
        for layer in self.hidden:
            layer.reset_parameters()
        self.out.reset_parameters()

    def forward(self, h: Tensor) -> Tensor:
        for layer in self.hidden:
            h = layer(h)
        return self.out(h)

    def config_dict(self) -> dict[str, int | str]:
        """Constructor arguments (JSON-able)."""
        return {
            "in_features": self.in_features,
            "num_outputs": self.num_outputs,
            "hidden_layers": self.hidden_layers,
            "hidden_features": self.hidden_features,
            "norm": self.norm_kind,
        }

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_features}, {self.num_outputs}, "
            f"hidden_layers={self.hidden_layers}, hidden_features={self.hidden_features}, "
            f"norm={self.norm_kind!r})"
        )
