"""Tests of target normalisation: fit on training data, invert predictions, persist."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from matxfer.data.transforms import TRANSFORM_KINDS, TargetTransform
from matxfer.errors import ConfigError, DataError


def skewed_targets(n: int = 200, columns: int = 2, seed: int = 0) -> torch.Tensor:
    """Columns on very different scales, with some labels missing."""
    rng = np.random.default_rng(seed)
    y = np.stack([rng.lognormal(c, 1.0 + c, size=n) * 10**c for c in range(columns)], axis=1)
    y[rng.random(y.shape) < 0.1] = np.nan
    return torch.tensor(y)


@pytest.mark.parametrize("kind", TRANSFORM_KINDS)
def test_inverse_undoes_transform(kind: str) -> None:
    y = skewed_targets()
    transform = TargetTransform(kind, num_targets=2).fit(y)
    assert torch.allclose(transform.inverse(transform(y)), y, equal_nan=True)
    as_numpy = y.numpy()
    back = transform.inverse(transform.transform(as_numpy))
    assert isinstance(back, np.ndarray)
    np.testing.assert_allclose(back, as_numpy)


def test_standardize_gives_zero_mean_unit_std_on_train_only() -> None:
    train = skewed_targets(seed=0)
    # Test targets shifted by three training standard deviations per column.
    test = train + 3.0 * torch.tensor(np.nanstd(train.numpy(), axis=0))
    transform = TargetTransform("standardize", num_targets=2).fit(train)
    z = transform(train).numpy()
    np.testing.assert_allclose(np.nanmean(z, axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(z, axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(transform.mean.numpy(), np.nanmean(train.numpy(), axis=0))
    # Test data is transformed with the training statistics, not its own.
    np.testing.assert_allclose(np.nanmean(transform(test).numpy(), axis=0), 3.0)


@pytest.mark.parametrize("kind", ["minmax", "both"])
def test_range_kinds_map_the_training_range_onto_minus_one_one(kind: str) -> None:
    train = skewed_targets()
    scaled = TargetTransform(kind, num_targets=2).fit(train)(train).numpy()
    np.testing.assert_allclose(np.nanmin(scaled, axis=0), -1.0, atol=1e-12)
    np.testing.assert_allclose(np.nanmax(scaled, axis=0), 1.0, atol=1e-12)


def test_both_equals_minmax_because_standardizing_is_affine() -> None:
    train = skewed_targets()
    both = TargetTransform("both", num_targets=2).fit(train)
    minmax = TargetTransform("minmax", num_targets=2).fit(train)
    assert torch.allclose(both(train), minmax(train), equal_nan=True, atol=1e-12)


def test_nan_labels_are_ignored_by_fit_and_kept() -> None:
    y = torch.tensor([[1.0, np.nan], [3.0, 10.0], [np.nan, 20.0]])
    transform = TargetTransform("standardize", num_targets=2).fit(y)
    assert transform.mean.tolist() == [2.0, 15.0]
    assert transform.std.tolist() == [1.0, 5.0]
    out = transform(y)
    assert torch.equal(torch.isnan(out), torch.isnan(y))


def test_columns_are_fitted_independently() -> None:
    y = skewed_targets()
    joint = TargetTransform("both", num_targets=2).fit(y)
    for column in range(2):
        alone = TargetTransform("both").fit(y[:, column])
        assert torch.allclose(joint(y)[:, column], alone(y[:, column]), equal_nan=True)


def test_zero_spread_column_warns_and_uses_scale_one() -> None:
    y = torch.tensor([[2.0, 1.0], [2.0, 3.0]])
    with pytest.warns(UserWarning, match=r"column\(s\) \[0\] have zero spread"):
        transform = TargetTransform("standardize", num_targets=2).fit(y)
    assert transform(y)[:, 0].tolist() == [0.0, 0.0]
    assert torch.equal(transform.inverse(transform(y)), y)


def test_state_dict_round_trip_restores_kind_and_statistics() -> None:
    y = skewed_targets()
    fitted = TargetTransform("minmax", num_targets=2).fit(y)
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    restored = TargetTransform("standardize", num_targets=2)
    restored.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert restored.kind == "minmax"
    torch.testing.assert_close(restored(y), fitted(y), rtol=0, atol=0, equal_nan=True)
    assert "kind='minmax'" in repr(restored)


def test_dict_round_trip_through_json() -> None:
    y = skewed_targets()
    fitted = TargetTransform("both", num_targets=2).fit(y)
    restored = TargetTransform.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert restored.kind == "both"
    assert torch.allclose(restored(y), fitted(y), equal_nan=True)
    with pytest.raises(ConfigError, match="lacks"):
        TargetTransform.from_dict({"kind": "both"})


def test_scale_factor_converts_mae_to_original_units() -> None:
    y = skewed_targets()[:, :1].nan_to_num(1.0)
    transform = TargetTransform("both").fit(y)
    prediction = y * 1.1 + 0.3
    mae_original = (prediction - y).abs().mean(dim=0)
    mae_normalised = (transform(prediction) - transform(y)).abs().mean(dim=0)
    assert torch.allclose(mae_normalised * transform.scale_factor(), mae_original)


def test_none_is_identity_and_dtype_is_kept() -> None:
    y = torch.tensor([[1.0], [5.0]], dtype=torch.float32)
    assert torch.equal(TargetTransform("none").fit(y)(y), y)
    standardized = TargetTransform("standardize").fit(y)(y)
    assert standardized.dtype == torch.float32


def test_bad_use_gives_clear_errors() -> None:
    with pytest.raises(ConfigError, match="'standardize', 'minmax', 'both', 'none'"):
        TargetTransform("zscore")
    with pytest.raises(DataError, match="not fitted"):
        TargetTransform()(torch.zeros(3))
    with pytest.raises(DataError, match=r"shape \[N, 2\]"):
        TargetTransform(num_targets=2).fit(torch.zeros(4, 3))
    with pytest.raises(DataError, match=r"column\(s\) \[1\] have no labelled"):
        TargetTransform(num_targets=2).fit(torch.tensor([[1.0, np.nan], [2.0, np.nan]]))
    fitted = TargetTransform(num_targets=2).fit(torch.rand(4, 2))
    with pytest.raises(DataError, match="last dimension 2"):
        fitted(torch.zeros(4, 3))
