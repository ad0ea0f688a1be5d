"""Which records train, validate and test a run."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import pytest
from training_helpers import synthetic_structures, tiny_config, write_alignn_json

from matxfer.errors import ConfigError, DataError, MatxferError
from matxfer.training.inputs import DataSpec, prepare_splits


def test_file_without_test_set_holds_out_a_seeded_fraction(tiny_data: Path) -> None:
    first = prepare_splits(tiny_data, tiny_config())
    again = prepare_splits(tiny_data, tiny_config())
    other = prepare_splits(tiny_data, tiny_config(seed=1))
    assert first.counts == {"train": 29, "val": 3, "test": 4}
    assert [r.id for r in first.test] == [r.id for r in again.test]
    assert [r.id for r in first.test] != [r.id for r in other.test]
    ids = [r.id for part in first.parts().values() for r in part]
    assert len(set(ids)) == 36


def test_explicit_test_file_and_size(tiny_data: Path, tmp_path: Path) -> None:
    test = write_alignn_json(tmp_path / "test.json", synthetic_structures(5, seed=3))
    # Same ids as the first 5 records of tiny_data but other crystals: they are removed from
    # the pool, as records also in the test set must never train the model.
    splits = prepare_splits(tiny_data, tiny_config(), test=test, size=20)
    assert splits.counts == {"train": 18, "val": 2, "test": 5}
    assert not {r.id for r in splits.test} & {r.id for r in splits.train + splits.val}
    assert "removed" in splits.source
    with pytest.raises(DataError, match="missing"):
        prepare_splits(tiny_data, tiny_config(), test=tmp_path / "missing.json")


def test_a_handful_of_training_records_draws_a_warning(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="only 3 training record"):
        splits = prepare_splits(tiny_data, tiny_config(), size=4)
    assert splits.counts["train"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the study's smallest size (10) trains 9: no warning
        assert prepare_splits(tiny_data, tiny_config(), size=10).counts["train"] == 9


def test_trial_needs_size_and_a_named_dataset(tiny_data: Path) -> None:
    with pytest.raises(ConfigError, match="--size"):
        prepare_splits(tiny_data, tiny_config(), trial=1)
    with pytest.raises(ConfigError, match="named datasets"):
        prepare_splits(tiny_data, tiny_config(), trial=1, size=10)


def _study_folder(tmp_path: Path) -> tuple[Path, list[str]]:
    """A study-layout folder (24 pool, 6 test records) and its trial-1 size-10 ids."""
    folder = tmp_path / "toy"
    folder.mkdir()
    structures = synthetic_structures(30, seed=5)
    write_alignn_json(folder / "pool.json", structures[:24])
    write_alignn_json(folder / "test.json", structures[24:])
    for name in ("pool", "test"):  # the study layout is gzipped JSON
        plain = folder / f"{name}.json"
        (folder / f"{name}.json.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    # Test ids would collide with pool ids (both start at syn-0); renumber the test file.
    test_items = json.loads(gzip.decompress((folder / "test.json.gz").read_bytes()))
    for item in test_items:
        item["jid"] = "t-" + item["jid"]
    (folder / "test.json.gz").write_bytes(gzip.compress(json.dumps(test_items).encode()))
    trial_ids = [f"syn-{i}" for i in (3, 1, 4, 15, 9, 2, 6, 5, 20, 11)]
    (folder / "trials.json").write_text(json.dumps({"1": {"10": trial_ids}}))
    return folder, trial_ids


def test_study_folder_trial_subset_and_fixed_test_set(tmp_path: Path) -> None:
    folder, trial_ids = _study_folder(tmp_path)
    splits = prepare_splits(folder, tiny_config(), trial=1, size=10)
    assert splits.counts == {"train": 9, "val": 1, "test": 6}
    assert sorted(r.id for r in splits.train + splits.val) == sorted(trial_ids)


@pytest.mark.shared_data
def test_study_subset_of_the_phonon_set(shared_datasets: Path) -> None:
    splits = prepare_splits("ph", tiny_config(), data_dir=shared_datasets, trial=1, size=800)
    assert splits.counts == {"train": 720, "val": 80, "test": 127}
    trial = json.loads((shared_datasets / "ph" / "trials.json").read_text())["1"]["800"]
    assert sorted(r.id for r in splits.train + splits.val) == sorted(str(i) for i in trial)


def test_data_spec_round_trips_through_the_run_info_dict(
    tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_data.parent)
    spec = DataSpec(tiny_data.name, size=20, target_key="target", skip_invalid=True)
    stored = spec.to_dict()
    assert stored["data"] == str(tiny_data.resolve())  # an existing path is made absolute
    assert stored["data_dir"] is None and stored["test"] is None
    assert DataSpec.from_dict(stored) == DataSpec(
        str(tiny_data.resolve()), size=20, target_key="target", skip_invalid=True
    )
    named = DataSpec("ph", data_dir="no-such-dir", trial=1, size=10)
    assert named.to_dict()["data"] == "ph"  # a dataset name stays a name
    assert DataSpec.from_dict(named.to_dict()) == named
    assert DataSpec.from_dict({"data": "ph"}) == DataSpec("ph")  # missing keys: defaults
    with pytest.raises(MatxferError, match="unknown keys \\['seed'\\]"):
        DataSpec.from_dict({"data": "ph", "seed": 1})
    with pytest.raises(MatxferError, match="needs 'data'"):
        DataSpec.from_dict({"size": 10})


def test_splits_carry_the_spec_of_each_kind_of_data(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, trial_ids = _study_folder(tmp_path)
    in_folder = prepare_splits(DataSpec(folder, trial=1, size=10), tiny_config())
    assert in_folder.spec == DataSpec(folder, trial=1, size=10)
    assert sorted(r.id for r in in_folder.train + in_folder.val) == sorted(trial_ids)
    # A dataset name resolves under data_dir: "ph" is a copy of the study folder there.
    folder.rename(tmp_path / "ph")
    monkeypatch.chdir(tiny_data.parent)  # no ./ph here, so "ph" is a name
    by_name = prepare_splits(DataSpec("ph", data_dir=tmp_path, trial=1, size=10), tiny_config())
    assert by_name.counts == in_folder.counts == {"train": 9, "val": 1, "test": 6}
    from_file = prepare_splits(DataSpec(tiny_data, size=20), tiny_config())
    assert from_file.counts == prepare_splits(tiny_data, tiny_config(), size=20).counts
    with pytest.raises(ConfigError, match="given with a DataSpec"):
        prepare_splits(DataSpec(tiny_data), tiny_config(), size=20)
