"""Named datasets: local study layout, aliases, downloads (offline, via file:// URLs)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from builders import alignn_entry
from pymatgen.core import Lattice, Structure

import matxfer.data.registry as registry
from matxfer.data import (
    DATASETS,
    check_dataset,
    dataset_spec,
    default_data_dir,
    fetch,
    resolve_data,
    resolve_named,
)
from matxfer.data.registry import extract_member, verify
from matxfer.errors import DataError

NACL = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def entries(ids: list[int]) -> list[dict]:
    return [alignn_entry(NACL, i, i / 10) for i in ids]


def write_gz(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps(data).encode()))


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    write_gz(tmp_path / "ph" / "pool.json.gz", entries([1, 2, 3, 4]))
    write_gz(tmp_path / "ph" / "test.json.gz", entries([5]))
    (tmp_path / "ph" / "trials.json").write_text(json.dumps({"1": {"10": [1, 2], "100": [3]}}))
    write_gz(tmp_path / "jarvis2d" / "pool.json.gz", entries([7]))
    return tmp_path


def test_every_dataset_has_a_spec() -> None:
    names = {spec.name for spec in DATASETS}
    assert names == {"fe", "bg", "gv", "ebg", "ph", "dc", "pz", "jarvis2d"}
    for spec in DATASETS:
        assert spec.size > 0
        assert spec.url is None or spec.url.startswith("https://")
        assert spec.sha256 is None or len(spec.sha256) == 64
    assert dataset_spec("mp_e_form").name == "fe"
    assert dataset_spec("PHONONS").name == "ph"
    with pytest.raises(DataError, match="unknown dataset 'xx'; choose one of: fe"):
        dataset_spec("xx")


def test_resolve_local_study_layout(study_dir: Path) -> None:
    named = resolve_named("ph", data_dir=study_dir)
    assert "pool" not in vars(named)  # nothing read yet
    assert named.pool.ids == ["1", "2", "3", "4"]
    assert named.test is not None and named.test.ids == ["5"]
    assert named.trials == {"1": {"10": ["1", "2"], "100": ["3"]}}
    assert resolve_named("phonons", data_dir=study_dir).pool_path == named.pool_path
    jarvis = resolve_named("jarvis2d", data_dir=study_dir)
    assert jarvis.test is None and jarvis.trials is None
    assert jarvis.pool.ids == ["7"]


def test_data_dir_from_environment(study_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("MATXFER_DATA_DIR", str(study_dir))
    assert default_data_dir() == study_dir
    assert resolve_named("ph").pool_path == study_dir / "ph" / "pool.json.gz"
    monkeypatch.delenv("MATXFER_DATA_DIR")
    assert default_data_dir() == Path.home() / ".cache" / "matxfer"


def test_local_only_and_offline_messages(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DataError, match=r"'ebg' .*no public structure file.*ebg/pool.json.gz"):
        resolve_named("expt_gap", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"put the study's files at .*ph/pool.json.gz.*download"):
        resolve_named("ph", data_dir=tmp_path, download=False)

    def offline(url: str, timeout: float) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(registry.urllib.request, "urlopen", offline)
    spec = dataset_spec("ph")
    monkeypatch.setattr(registry, "DATASETS", (replace(spec, url="https://example.invalid/x"),))
    with pytest.raises(DataError, match=r"could not download .*network unreachable.*put it at"):
        resolve_named("ph", data_dir=tmp_path)


def test_fetch_file_url_with_checksum(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    dest = tmp_path / "cache" / "copy.bin"
    assert fetch(source.as_uri(), dest, digest) == digest
    assert dest.read_bytes() == b"payload"
    with pytest.raises(DataError, match="expected 00"):
        fetch(source.as_uri(), tmp_path / "other.bin", "0" * 64)
    assert not (tmp_path / "other.bin").exists()
    assert not (tmp_path / "other.bin.part").exists()


def test_trust_on_first_use(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"first")
    dest = tmp_path / "cache" / "file.bin"
    fetch(source.as_uri(), dest)
    recorded = (tmp_path / "cache" / "file.bin.sha256").read_text().strip()
    assert recorded == hashlib.sha256(b"first").hexdigest()
    assert verify(dest, None) == recorded
    dest.write_bytes(b"tampered")
    with pytest.raises(DataError, match="does not match"):
        verify(dest, None)


def test_download_then_read_matbench(tmp_path: Path, monkeypatch) -> None:
    table = {
        "index": ["mb-ph-1", "mb-ph-2"],
        "columns": ["structure", "last phdos peak"],
        "data": [[NACL.as_dict(), 300.0], [NACL.as_dict(), 400.0]],
    }
    payload = gzip.compress(json.dumps(table).encode())

    def opener(url: str, timeout: float) -> io.BytesIO:
        assert url == dataset_spec("ph").url
        return io.BytesIO(payload)

    spec = replace(dataset_spec("ph"), sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(registry, "DATASETS", (spec,))
    monkeypatch.setattr(registry.urllib.request, "urlopen", opener)
    named = resolve_named("ph", data_dir=tmp_path)
    assert named.pool_path == tmp_path / "downloads" / "matbench_phonons.json.gz"
    assert named.pool.ids == ["mb-ph-1", "mb-ph-2"]
    assert [r.target for r in named.pool] == [300.0, 400.0]
    assert named.test is None and named.trials is None


def test_extract_member_refuses_unsafe_paths(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/d2.json", "[]")
        zf.writestr("../evil.json", "[]")
    out = tmp_path / "out"
    out.mkdir()
    assert extract_member(archive, "data/d2.json", out).read_text() == "[]"
    for unsafe in ("../evil.json", "/etc/passwd", "C:\\x.json"):
        with pytest.raises(DataError, match="unsafe archive path"):
            extract_member(archive, unsafe, out)
    assert not (tmp_path / "evil.json").exists()
    with pytest.raises(DataError, match=r"no 'missing\.json' inside"):
        extract_member(archive, "missing.json", out)


def test_check_dataset_targets(study_dir: Path) -> None:
    parts = check_dataset("ph", data_dir=study_dir)
    assert [len(p) for p in parts] == [4, 1]
    assert [len(p) for p in check_dataset(study_dir / "ph")] == [4, 1]
    assert [len(p) for p in check_dataset(study_dir / "ph" / "test.json.gz")] == [1]
    with pytest.raises(DataError, match="nor a dataset name"):
        check_dataset("nonsense")


def test_download_jarvis_zip_trust_on_first_use(tmp_path: Path, monkeypatch) -> None:
    records = entries([1, 2])
    for record in records:
        record["jid"] = f"JVASP-{record['jid']}"
        record["optb88vdw_bandgap"] = record.pop("target") + 1
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("d2-12-12-2022.json", json.dumps(records))
    monkeypatch.setattr(
        registry.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(buffer.getvalue())
    )
    named = resolve_named("jarvis2d", data_dir=tmp_path)
    assert named.pool.ids == ["JVASP-1", "JVASP-2"]
    assert [r.target for r in named.pool] == [1.1, 1.2]
    downloads = tmp_path / "downloads"
    recorded = (downloads / "d2-12-12-2022.json.zip.sha256").read_text().strip()
    assert recorded == hashlib.sha256(buffer.getvalue()).hexdigest()
    # a later resolve re-checks the recorded hash of the cached archive
    (downloads / "d2-12-12-2022.json.zip").write_bytes(b"changed")
    with pytest.raises(DataError, match="does not match"):
        resolve_named("jarvis2d", data_dir=tmp_path)


def test_resolve_data_tells_study_folders_named_datasets_and_files_apart(
    study_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = resolve_data(study_dir / "ph", target_key="t")  # an existing study-layout folder
    assert folder is not None and folder.pool_path == study_dir / "ph" / "pool.json.gz"
    assert folder.target_key == "t"  # a folder's files take the caller's reader options
    named = resolve_data("phonons", data_dir=study_dir)  # no such path: a dataset alias
    assert named is not None and named.name == "ph" and named.trials_path is not None
    dataset_file = tmp_path / "data.json"
    dataset_file.write_text(json.dumps(entries([1])))
    assert resolve_data(dataset_file) is None  # a file: for read_dataset
    assert resolve_data(study_dir) is None  # a folder without pool.json.gz
    monkeypatch.chdir(study_dir)
    assert resolve_data("ph") is not None  # ./ph is a study folder, found as a path
    (tmp_path / "fe").write_text("[]")
    monkeypatch.chdir(tmp_path)
    assert resolve_data("fe", data_dir=study_dir) is None  # an existing file wins over the name
    with pytest.raises(DataError, match="not found"):
        resolve_data("dc", data_dir=tmp_path / "empty", download=False)
