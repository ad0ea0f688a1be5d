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


def through_state_dict(fitted: TargetTransform) -> TargetTransform:
    """A fresh ``standardize`` transform loaded (strictly) from ``fitted``'s saved state."""
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    restored = TargetTransform("standardize", num_targets=fitted.num_targets)
    restored.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    return restored


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
    with pytest.warns(UserWarning, match=r"target\(s\) \[0\] have the same value"):
        transform = TargetTransform("standardize", num_targets=2).fit(y)
    assert transform(y)[:, 0].tolist() == [0.0, 0.0]
    with pytest.warns(UserWarning, match=r"target\(s\) 'dc' have the same value for every"):
        TargetTransform("standardize", num_targets=2).fit(y, names=["dc", "pz"])
    assert torch.equal(transform.inverse(transform(y)), y)


def test_state_dict_round_trip_restores_kind_and_statistics() -> None:
    y = skewed_targets()
    fitted = TargetTransform("minmax", num_targets=2).fit(y)
    restored = through_state_dict(fitted)
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
    with pytest.raises(DataError, match=r"target\(s\) \[1\] have no labelled"):
        TargetTransform(num_targets=2).fit(torch.tensor([[1.0, np.nan], [2.0, np.nan]]))
    fitted = TargetTransform(num_targets=2).fit(torch.rand(4, 2))
    with pytest.raises(DataError, match="last dimension 2"):
        fitted(torch.zeros(4, 3))


def test_yeo_johnson_makes_heavy_tails_symmetric_with_scipys_lambda() -> None:
    from scipy import stats

    y = skewed_targets()
    transform = TargetTransform("yeo-johnson", num_targets=2).fit(y)
    out = transform(y).numpy()
    for column in range(2):
        known = y[:, column].numpy()
        known = known[~np.isnan(known)]
        z = (known - known.mean()) / known.std()
        assert transform.power_lambda[column] == pytest.approx(stats.yeojohnson_normmax(z))
        mapped = out[:, column][~np.isnan(out[:, column])]
        np.testing.assert_allclose([mapped.mean(), mapped.std()], [0.0, 1.0], atol=1e-9)
        # The lognormal tail is tamed: skewness (1.8 and 8.4 here) falls at least fourfold.
        assert stats.skew(known) > 1.5 and abs(stats.skew(mapped)) < stats.skew(known) / 4
    assert torch.equal(torch.isnan(transform(y)), torch.isnan(y))


def test_yeo_johnson_matches_scipy_on_both_branches_and_special_lambdas() -> None:
    from scipy import stats

    from matxfer.data.transforms import yeo_johnson, yeo_johnson_inverse

    z = torch.linspace(-3, 3, 61, dtype=torch.float64)
    for lam in (-1.5, 0.0, 0.7, 2.0, 3.0):
        mapped = yeo_johnson(z, torch.tensor([lam], dtype=torch.float64))
        np.testing.assert_allclose(mapped.numpy(), stats.yeojohnson(z.numpy(), lam), atol=1e-12)
        back = yeo_johnson_inverse(mapped, torch.tensor([lam], dtype=torch.float64))
        np.testing.assert_allclose(back.numpy(), z.numpy(), atol=1e-9)


def test_yeo_johnson_keeps_extrapolating_predictions_finite_and_near_the_training_range() -> None:
    # A right tail gives lambda < 0: the map is bounded above and its inverse explodes there.
    y = torch.tensor(np.random.default_rng(1).lognormal(0.0, 1.5, size=(300, 1)))
    transform = TargetTransform("yeo-johnson").fit(y)
    assert transform.power_lambda[0] < 0
    predictions = transform.inverse(
        torch.tensor([[-1e6], [-50.0], [50.0], [1e6], [np.nan]], dtype=torch.float64)
    )
    low, high = float(y.min()), float(y.max())
    margin = (high - low) / 2
    assert predictions[:4].isfinite().all() and predictions[4].isnan()
    assert torch.allclose(
        predictions[[0, 3], 0], torch.tensor([low - margin, high + margin]).double()
    )
    assert (predictions[:4] >= low - margin).all() and (predictions[:4] <= high + margin).all()


def test_yeo_johnson_survives_state_dict_and_json_round_trips() -> None:
    y = skewed_targets()
    fitted = TargetTransform("yeo-johnson", num_targets=2).fit(y)
    restored = through_state_dict(fitted)
    from_json = TargetTransform.from_dict(json.loads(json.dumps(fitted.to_dict())))
    for other in (restored, from_json):
        assert other.kind == "yeo-johnson"
        torch.testing.assert_close(other(y), fitted(y), rtol=0, atol=0, equal_nan=True)
    assert "lambda=" in repr(restored)
    with pytest.raises(ConfigError, match="not linear"):
        fitted.scale_factor()


def test_a_state_dict_written_before_yeo_johnson_existed_still_loads() -> None:
    y = skewed_targets()
    fitted = TargetTransform("both", num_targets=2).fit(y)
    old = fitted.state_dict()
    assert old["_extra_state"] == {"kind": "both"}  # what older checkpoints hold
    restored = TargetTransform("standardize", num_targets=2)
    restored.load_state_dict(old, strict=True)
    torch.testing.assert_close(restored(y), fitted(y), rtol=0, atol=0, equal_nan=True)


def test_yeo_johnson_without_spread_is_the_identity_map() -> None:
    with pytest.warns(UserWarning, match="zero spread"):
        transform = TargetTransform("yeo-johnson", num_targets=2).fit(
            torch.tensor([[2.0, 1.0], [2.0, 3.0], [2.0, 4.0]])
        )
    assert transform.power_lambda[0] == 1.0
