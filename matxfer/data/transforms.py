r"""Target normalisation, fitted on training data and stored with the model.

Each kind but ``yeo-johnson`` is a per-column affine map :math:`y' = (y - a) / b`:

* ``standardize``: :math:`a = \mu`, :math:`b = \sigma`.
* ``minmax``: maps the training range onto [-1, 1],
  :math:`a = (y_{max} + y_{min}) / 2`, :math:`b = (y_{max} - y_{min}) / 2`.
* ``both``: standardizes, then maps the standardized training range onto
  [-1, 1], as the study published its targets ("standardized, then scaled
  into [-1, 1]"; Devi, Butler & Sai Gautam, arXiv 2406.13142). Because
  standardizing is itself affine, the result equals ``minmax`` up to float
  rounding; the kind exists to name the study's pipeline.
* ``none``: identity.
* ``yeo-johnson``: for heavy-tailed targets (dielectric constants, piezoelectric
  moduli: a few large values carry most of the squared error). Standardizes,
  applies the Yeo-Johnson power map :math:`\psi_\lambda` (Yeo & Johnson,
  Biometrika 87, 954 (2000)), then standardizes again:
  :math:`y' = (\psi_\lambda((y - \mu) / \sigma) - m) / s`, with

  .. math::

      \psi_\lambda(z) = \begin{cases}
          ((z + 1)^\lambda - 1) / \lambda & z \ge 0,\ \lambda \ne 0 \\
          \log(1 + z) & z \ge 0,\ \lambda = 0 \\
          -((1 - z)^{2 - \lambda} - 1) / (2 - \lambda) & z < 0,\ \lambda \ne 2 \\
          -\log(1 - z) & z < 0,\ \lambda = 2
      \end{cases}

  :math:`\lambda` maximises the Gaussian likelihood of the standardized training
  targets (:func:`scipy.stats.yeojohnson_normmax`); standardizing first makes
  it independent of the units. For :math:`\lambda < 0` the map is bounded above,
  so its inverse explodes near the bound: predictions are therefore kept within
  the training range widened by half its width on each side (in original units),
  which an extrapolating model can reach but not exceed.

Statistics ignore missing labels (NaN), which stay NaN. A column with zero
spread (constant, or a single labelled record) gets scale 1 and a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import torch
from torch import Tensor, nn

from matxfer.errors import ConfigError, DataError

TransformKind = Literal["standardize", "minmax", "both", "none", "yeo-johnson"]
TRANSFORM_KINDS: tuple[str, ...] = get_args(TransformKind)
_STATS = ("mean", "std", "min", "max")
_POWER = ("power_lambda", "power_mean", "power_std")

ArrayOrTensor = TypeVar("ArrayOrTensor", Tensor, np.ndarray)


def resolve_kind(kind: str) -> TransformKind:
    """Validate a transform name (case-insensitive).

    Args:
        kind: One of ``standardize``, ``minmax``, ``both``, ``none``, ``yeo-johnson``.

    Raises:
        ConfigError: Unknown name; the message lists the choices.
    """
    name = kind.lower()
    if name not in TRANSFORM_KINDS:
        raise ConfigError(f"unknown target transform {kind!r}; choose one of {TRANSFORM_KINDS}")
    return name  # type: ignore[return-value]


#: Below this distance λ counts as the special case 0 (or 2) of the Yeo-Johnson map.
_LAMBDA_EPS = 1e-8
#: Smallest base of the inverse power, keeping it inside its domain (finite, maybe huge).
_TINY = 1e-300
#: Predictions are kept within the training range widened by this share of it per side.
_RANGE_MARGIN = 0.5


def _column_names(mask: Tensor, names: Sequence[str] | None) -> str:
    """The columns ``mask`` marks, by name when known (``'dc', 'pz'``), else by number."""
    columns = torch.nonzero(mask).flatten().tolist()
    return ", ".join(repr(names[c]) for c in columns) if names else str(columns)


def _column_mean_std(values: Tensor, labelled: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population std (ddof 0, so standardized training targets have std
    exactly 1) of each column of ``values`` ``[N, P]`` over its ``labelled`` entries."""
    count = labelled.sum(dim=0)
    mean = torch.where(labelled, values, 0.0).sum(dim=0) / count
    std = (torch.where(labelled, values - mean, 0.0) ** 2).sum(dim=0).div(count).sqrt()
    return mean, std


def _branches(values: Tensor, lam: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Split ``values`` at 0 and make λ safe to divide by, for both Yeo-Johnson branches."""
    positive = values >= 0  # NaN is not: it flows through the negative branch and stays NaN
    upper = torch.where(positive, values, 0.0)
    lower = torch.where(positive, 0.0, values)
    lam_up = torch.where(lam.abs() < _LAMBDA_EPS, 1.0, lam)
    lam_down = torch.where((lam - 2).abs() < _LAMBDA_EPS, 1.0, 2 - lam)
    return positive, upper, lower, lam_up, lam_down


def yeo_johnson(z: Tensor, lam: Tensor) -> Tensor:
    """The Yeo-Johnson map :math:`\\psi_\\lambda(z)` (module docstring), element-wise.

    Args:
        z: Values ``[..., P]`` (float64 advised).
        lam: λ per column ``[P]``.
    """
    positive, upper, lower, lam_up, lam_down = _branches(z, lam)
    up = torch.where(
        lam.abs() < _LAMBDA_EPS, torch.log1p(upper), ((upper + 1) ** lam_up - 1) / lam_up
    )
    down = torch.where(
        (lam - 2).abs() < _LAMBDA_EPS,
        -torch.log1p(-lower),
        -((1 - lower) ** lam_down - 1) / lam_down,
    )
    return torch.where(positive, up, down)


def yeo_johnson_inverse(t: Tensor, lam: Tensor) -> Tensor:
    """Inverse of :func:`yeo_johnson`. Values beyond the map's bound (λ < 0 above,
    λ > 2 below) give a huge finite or infinite value, never NaN."""
    positive, upper, lower, lam_up, lam_down = _branches(t, lam)
    up = torch.where(
        lam.abs() < _LAMBDA_EPS,
        torch.expm1(upper),
        (1 + lam_up * upper).clamp_min(_TINY) ** (1 / lam_up) - 1,
    )
    down = torch.where(
        (lam - 2).abs() < _LAMBDA_EPS,
        -torch.expm1(-lower),
        1 - (1 - lam_down * lower).clamp_min(_TINY) ** (1 / lam_down),
    )
    return torch.where(positive, up, down)


class TargetTransform(nn.Module):
    """Per-column target normalisation whose statistics are registered buffers.

    The statistics (``mean``, ``std``, ``min``, ``max``, each of shape [P],
    from the training targets) and the derived ``shift``/``scale`` live in
    the ``state_dict``, and ``kind`` travels as its extra state, so a model
    that owns a ``TargetTransform`` restores it with ``load_state_dict``.

    ``yeo-johnson`` also keeps λ and the mean and std of the power-mapped values
    per column (``power_lambda``, ``power_mean``, ``power_std``) in the extra
    state, so checkpoints written before the kind existed still load.

    Args:
        kind: ``standardize``, ``minmax``, ``both``, ``none`` or ``yeo-johnson``
            (default: ``standardize``).
        num_targets: Number of target columns P (default: 1).

    Shapes:
        - **input/output:** ``[..., P]`` (or ``[N]`` when P = 1), a Tensor or
          a NumPy array; the output has the input's type, dtype and shape.
    """

    mean: Tensor
    std: Tensor
    min: Tensor
    max: Tensor
    shift: Tensor
    scale: Tensor
    fitted: Tensor

    def __init__(self, kind: str = "standardize", num_targets: int = 1) -> None:
        super().__init__()
        if num_targets < 1:
            raise ConfigError(f"num_targets must be at least 1, got {num_targets}")
        self.kind: TransformKind = resolve_kind(kind)
        self.num_targets = num_targets
        for name, value in [("mean", 0.0), ("std", 1.0), ("min", -1.0), ("max", 1.0)]:
            self.register_buffer(name, torch.full((num_targets,), value, dtype=torch.float64))
        self.register_buffer("shift", torch.zeros(num_targets, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(num_targets, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))
        self.power_lambda = torch.ones(num_targets, dtype=torch.float64)
        self.power_mean = torch.zeros(num_targets, dtype=torch.float64)
        self.power_std = torch.ones(num_targets, dtype=torch.float64)

    def extra_repr(self) -> str:
        power = f", lambda={self.power_lambda.tolist()}" if self.kind == "yeo-johnson" else ""
        return (
            f"kind={self.kind!r}, num_targets={self.num_targets}, fitted={bool(self.fitted)}{power}"
        )

    def _power_state(self) -> dict[str, list[float]]:
        return {name: getattr(self, name).tolist() for name in _POWER}

    def _column_values(self, name: str, values: Any) -> Tensor:
        """``values`` as a float64 vector of one entry per column, or a ConfigError."""
        column = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        if column.numel() != self.num_targets:
            raise ConfigError(
                f"target transform {name!r} has {column.numel()} values, "
                f"expected {self.num_targets}"
            )
        return column

    def _set_power_state(self, power: dict[str, Any]) -> None:
        for name in _POWER:
            setattr(self, name, self._column_values(name, power[name]))

    def get_extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": self.kind}
        if self.kind == "yeo-johnson":
            state["power"] = self._power_state()
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.kind = resolve_kind(state["kind"])
        if "power" in state:
            self._set_power_state(state["power"])

    @torch.no_grad()
    def fit(self, y: Tensor | np.ndarray, names: Sequence[str] | None = None) -> TargetTransform:
        """Compute the statistics from training targets.

        Args:
            y: Training targets ``[N, P]`` (or ``[N]`` when P = 1), NaN where
                a label is missing; never include validation or test records.
            names: The P target names, for messages (default: column numbers).

        Returns:
            ``self``, fitted.

        Raises:
            DataError: The shape does not match P, or a column has no label.
        """
        values = self._as_columns(torch.as_tensor(y, dtype=torch.float64))
        if bool(torch.isinf(values).any()):
            raise DataError("training targets contain infinite values; fix or drop those records")
        labelled = ~torch.isnan(values)
        count = labelled.sum(dim=0)
        if bool((count == 0).any()):
            empty = _column_names(count == 0, names)
            raise DataError(f"target(s) {empty} have no labelled training value")
        mean, std = _column_mean_std(values, labelled)
        if self.kind != "none" and bool((std == 0).any()):
            warnings.warn(
                f"target(s) {_column_names(std == 0, names)} have the same value for every "
                "training record (zero spread); using scale 1 for them",
                UserWarning,
                stacklevel=2,
            )
        y_min = torch.where(labelled, values, torch.inf).amin(dim=0)
        y_max = torch.where(labelled, values, -torch.inf).amax(dim=0)
        for name, stat in zip(_STATS, (mean, std, y_min, y_max), strict=True):
            getattr(self, name).copy_(stat)
        self.fitted.fill_(True)
        self._update_affine()
        if self.kind == "yeo-johnson":
            self._fit_power(values, labelled)
        return self

    def _fit_power(self, values: Tensor, labelled: Tensor) -> None:
        """λ per column by maximum likelihood on the standardized training targets, then
        the mean and std of the mapped values (a column without spread keeps λ = 1)."""
        from scipy.stats import yeojohnson_normmax

        z = (values - self.shift) / self.scale
        lam = torch.ones(self.num_targets, dtype=torch.float64)
        for column in range(self.num_targets):
            known = z[labelled[:, column], column].numpy()
            if self.std[column] > 0 and len(known) >= 3:
                lam[column] = float(yeojohnson_normmax(known))
        mean, spread = _column_mean_std(yeo_johnson(z, lam), labelled)
        self.power_lambda = lam
        self.power_mean = mean
        self.power_std = torch.where(spread > 0, spread, 1.0)

    def _update_affine(self) -> None:
        """Derive ``shift``/``scale`` from the statistics and ``kind``."""
        flat = self.std == 0
        std = torch.where(flat, 1.0, self.std)
        half_range = torch.where(flat, 1.0, (self.max - self.min) / 2)
        centre = (self.max + self.min) / 2
        if self.kind in ("standardize", "yeo-johnson"):
            shift, scale = self.mean, std
        elif self.kind == "minmax":
            shift, scale = centre, half_range
        elif self.kind == "both":
            # Standardize, then map the standardized range [z_min, z_max] onto [-1, 1].
            z_centre = (centre - self.mean) / std
            z_half_range = torch.where(flat, 1.0, half_range / std)
            shift, scale = self.mean + std * z_centre, std * z_half_range
        else:
            shift, scale = torch.zeros_like(self.mean), torch.ones_like(self.std)
        self.shift.copy_(shift)
        self.scale.copy_(scale)

    def _as_columns(self, y: Tensor) -> Tensor:
        """``y`` as ``[N, P]``, checking its last dimension."""
        if y.dim() == 1 and self.num_targets == 1:
            return y.unsqueeze(-1)
        if y.dim() != 2 or y.shape[-1] != self.num_targets:
            raise DataError(
                f"expected targets of shape [N, {self.num_targets}], got {list(y.shape)}"
            )
        return y

    def _affine(self, y: ArrayOrTensor, inverse: bool) -> ArrayOrTensor:
        if not bool(self.fitted):
            raise DataError("the target transform is not fitted: call fit() on training targets")
        values = torch.as_tensor(y)
        one_column = self.num_targets == 1 and values.dim() == 1
        if values.dim() == 0 or (values.shape[-1] != self.num_targets and not one_column):
            raise DataError(
                f"expected targets with last dimension {self.num_targets}, got {list(values.shape)}"
            )
        dtype = values.dtype if values.is_floating_point() else torch.float64
        if self.kind == "yeo-johnson":
            out = self._power(values.to(torch.float64), inverse).to(dtype)
        else:
            shift = self.shift.to(device=values.device, dtype=dtype)
            scale = self.scale.to(device=values.device, dtype=dtype)
            out = values * scale + shift if inverse else (values - shift) / scale
        return out.numpy() if isinstance(y, np.ndarray) else out

    def _power(self, values: Tensor, inverse: bool) -> Tensor:
        """The ``yeo-johnson`` kind in float64 (see the module docstring)."""
        device = values.device
        shift, scale = self.shift.to(device), self.scale.to(device)
        lam = self.power_lambda.to(device)
        mean, std = self.power_mean.to(device), self.power_std.to(device)
        if not inverse:
            return (yeo_johnson((values - shift) / scale, lam) - mean) / std
        original = yeo_johnson_inverse(values * std + mean, lam) * scale + shift
        margin = _RANGE_MARGIN * (self.max - self.min).to(device)
        low, high = self.min.to(device) - margin, self.max.to(device) + margin
        return torch.minimum(torch.maximum(original, low), high)

    def forward(self, y: ArrayOrTensor) -> ArrayOrTensor:
        """Transform targets to normalised units (same as :meth:`transform`)."""
        return self._affine(y, inverse=False)

    def transform(self, y: ArrayOrTensor) -> ArrayOrTensor:
        """Targets in original units → normalised units.

        Args:
            y: Targets ``[..., P]``; NaN stays NaN.
        """
        return self._affine(y, inverse=False)

    def inverse(self, y: ArrayOrTensor) -> ArrayOrTensor:
        """Predictions in normalised units → original units.

        Args:
            y: Normalised values ``[..., P]``.
        """
        return self._affine(y, inverse=True)

    def scale_factor(self) -> Tensor:
        """Per-column factor [P] turning an MAE in normalised units into original units.

        Raises:
            ConfigError: The ``yeo-johnson`` kind is not affine: no factor exists.
        """
        if self.kind == "yeo-johnson":
            raise ConfigError(
                "the yeo-johnson target transform is not linear: an MAE in normalised "
                "units has no factor to original units; compute it on inverted predictions"
            )
        return self.scale.clone()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: kind, P, fitted flag and the statistics as lists."""
        stats = {name: getattr(self, name).tolist() for name in _STATS}
        power = {"power": self._power_state()} if self.kind == "yeo-johnson" else {}
        return {
            "kind": self.kind,
            "num_targets": self.num_targets,
            "fitted": bool(self.fitted),
            **stats,
            **power,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetTransform:
        """Rebuild a transform written by :meth:`to_dict`.

        Args:
            data: The dictionary (e.g. read back from JSON).

        Raises:
            ConfigError: Keys are missing or statistics have the wrong length.
        """
        missing = [k for k in ("kind", "num_targets", "fitted", *_STATS) if k not in data]
        if missing:
            raise ConfigError(f"target transform description lacks {missing}")
        transform = cls(kind=data["kind"], num_targets=int(data["num_targets"]))
        for name in _STATS:
            getattr(transform, name).copy_(transform._column_values(name, data[name]))
        if "power" in data:
            transform._set_power_state(data["power"])
        transform.fitted.fill_(bool(data["fitted"]))
        transform._update_affine()
        return transform


#: The name the project contract uses for the module stored with a model.
TargetScaler = TargetTransform
