"""Named datasets of the transfer-learning study, found locally or downloaded.

:func:`resolve_named` turns a name or alias (``"ph"``, ``"phonons"``) into a
:class:`NamedDataset` by looking, in order, for

1. the study's layout under the data directory: ``{dir}/{name}/pool.json.gz``
   (plus ``test.json.gz`` and ``trials.json`` when present; the directory may
   be named by the code or any alias), as in ``../shared/datasets``;
2. the public file, already downloaded to ``{dir}/downloads/``;
3. the public file, downloaded now with :func:`fetch` (the whole public set
   becomes the pool; there is no test split or trials).

The data directory is ``data_dir=`` / ``--data-dir``, else ``$MATXFER_DATA_DIR``,
else ``~/.cache/matxfer``.

Integrity: the Matbench/Matminer files are checked against the SHA-256
published in matminer's ``dataset_metadata.json``. JARVIS publishes no
checksum for its figshare zip, so its hash is recorded on first download
(trust on first use, in ``{file}.sha256``) and checked on every later use.
``ebg`` (experimental band gaps) is only available locally: Matminer holds
compositions only, and the study matched structures to about half of them.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from matxfer.data.readers import Dataset, read_dataset
from matxfer.data.splits import load_trials
from matxfer.data.validate import ValidationConfig
from matxfer.errors import DataError

_MATBENCH = "https://ml.materialsproject.org/projects/{}.json.gz"
_FIGSHARE = "https://ndownloader.figshare.com/files/{}"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named dataset comes from.

    Args:
        name: Short code, also the directory name in the study layout.
        aliases: Other accepted names.
        description: Property and source, in words.
        size: Records in the full public dataset.
        url: Public download URL (``None``: local only).
        sha256: Expected SHA-256 of the download (``None``: trust on first use).
        file_name: Name of the downloaded file in ``{data_dir}/downloads``.
        format: Reader format of the downloaded file.
        target_key: Field/column holding the target in the downloaded file.
        archive_member: File to extract from a downloaded zip archive.
    """

    name: str
    aliases: tuple[str, ...]
    description: str
    size: int
    url: str | None
    sha256: str | None
    file_name: str
    format: str
    target_key: str | None
    archive_member: str | None = None


#: The study's datasets; hashes from matminer/datasets/dataset_metadata.json.
DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "fe", ("mp_e_form", "matbench_mp_e_form", "formation_energy"),
        "formation energy per atom, Materials Project (matbench_mp_e_form)", 132_752,
        _MATBENCH.format("matbench_mp_e_form"),
        "dedcb1d4ba2e3e50dbdd45ba5bc647a00e9c2bcf8f8bf556dc8e92caa39eb21f",
        "matbench_mp_e_form.json.gz", "matbench", "e_form",
    ),
    DatasetSpec(
        "bg", ("mp_gap", "matbench_mp_gap", "band_gap"),
        "PBE band gap, Materials Project (matbench_mp_gap)", 106_113,
        _MATBENCH.format("matbench_mp_gap"),
        "58b65746bd88329986ed66031a2ac1369c7c522f7bc9f9081528e07097c2c057",
        "matbench_mp_gap.json.gz", "matbench", "gap pbe",
    ),
    DatasetSpec(
        "gv", ("log_gvrh", "matbench_log_gvrh", "shear_modulus"),
        "log10 VRH shear modulus, Materials Project (matbench_log_gvrh)", 10_987,
        _MATBENCH.format("matbench_log_gvrh"),
        "098af941f4c663270f1fe21abf20ffad6fb85ecbfcba5786ceac03983ac29da7",
        "matbench_log_gvrh.json.gz", "matbench", "log10(G_VRH)",
    ),
    DatasetSpec(
        "ebg", ("expt_gap", "matbench_expt_gap"),
        "experimental band gap matched to structures (matbench_expt_gap has compositions "
        "only; local files only)", 4_604,
        None, None, "matbench_expt_gap.json.gz", "alignn", None,
    ),
    DatasetSpec(
        "ph", ("phonons", "matbench_phonons"),
        "highest optical phonon peak, Materials Project (matbench_phonons)", 1_265,
        _MATBENCH.format("matbench_phonons"),
        "4db551f21ec5f577e6202725f10e34dfc509aa7df3a6bdaac497da7f6dbbb9b3",
        "matbench_phonons.json.gz", "matbench", "last phdos peak",
    ),
    DatasetSpec(
        # 1,056 records is matminer's dielectric_constant (Petousis et al. 2017), not
        # matbench_dielectric (4,764 refractive indices); its total dielectric constant
        # is poly_total.
        "dc", ("dielectric", "dielectric_constant"),
        "dielectric constant, Materials Project (matminer dielectric_constant)", 1_056,
        _FIGSHARE.format(13213475),
        "8eb24812148732786cd7c657eccfc6b5ee66533429c2cfbcc4f0059c0295e8b6",
        "dielectric_constant.json.gz", "matbench", "poly_total",
    ),
    DatasetSpec(
        "pz", ("piezoelectric", "piezoelectric_tensor"),
        "piezoelectric modulus, Materials Project (matminer piezoelectric_tensor)", 941,
        _FIGSHARE.format(13220621),
        "dc9d04836f7f91ecb4ef6dc23e42468571be857f0fccafdfb51a5a40f19db898",
        "piezoelectric_tensor.json.gz", "matbench", "eij_max",
    ),
    DatasetSpec(
        "jarvis2d", ("dft_2d", "jarvis_2d", "2d"),
        "OptB88vdW band gap of 2D materials (JARVIS-DFT dft_2d)", 1_103,
        _FIGSHARE.format(38521268), None,
        "d2-12-12-2022.json.zip", "alignn", "optb88vdw_bandgap",
        archive_member="d2-12-12-2022.json",
    ),
)  # fmt: skip


#: Small real subsets shipped inside the package (see ``demo/ATTRIBUTION.md``),
#: in the study layout, so the demo and ``data check`` work offline.
DEMO_DIR = Path(__file__).resolve().parent / "demo"

DEMO_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "demo-fe", ("demo_fe",),
        "demo: 2,000 formation energies of cells with <= 12 atoms (shipped)", 2_000,
        None, None, "", "alignn", None,
    ),
    DatasetSpec(
        "demo-ph", ("demo_ph", "demo"),
        "demo: the study's phonon-peak pool, test set and trials (shipped)", 1_265,
        None, None, "", "alignn", None,
    ),
)  # fmt: skip


def dataset_names() -> list[str]:
    """Codes of the named datasets."""
    return [spec.name for spec in DATASETS]


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a dataset code or alias (case-insensitive).

    Args:
        name: Code or alias, e.g. ``"ph"`` or ``"phonons"``.
    """
    key = name.strip().lower()
    for spec in (*DATASETS, *DEMO_DATASETS):
        if key == spec.name or key in spec.aliases:
            return spec
    choices = "; ".join(
        f"{s.name} ({', '.join(s.aliases[:2])})" for s in (*DATASETS, *DEMO_DATASETS)
    )
    raise DataError(f"unknown dataset '{name}'; choose one of: {choices}")


def is_named(name: str) -> bool:
    """Whether ``name`` is a dataset code or alias."""
    try:
        dataset_spec(name)
    except DataError:
        return False
    return True


def default_data_dir() -> Path:
    """``$MATXFER_DATA_DIR`` if set, else ``~/.cache/matxfer``."""
    env = os.environ.get("MATXFER_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "matxfer"


@dataclass
class NamedDataset:
    """A named dataset: pool, optional test split and study trials, read on first use.

    Args:
        name: Dataset code.
        spec: Its :class:`DatasetSpec`.
        pool_path: File holding the pool (or the whole public dataset).
        test_path: Held-out test file, if any.
        trials_path: ``trials.json``, if any.
        format: Reader format (``None``: detect).
        target_key: Target field (``None``: the format's default).
        skip_invalid: Drop invalid records instead of refusing the file.
        validation: Check thresholds.
    """

    name: str
    spec: DatasetSpec
    pool_path: Path
    test_path: Path | None = None
    trials_path: Path | None = None
    format: str | None = None
    target_key: str | None = None
    skip_invalid: bool = False
    validation: ValidationConfig | None = field(default=None, repr=False)

    def _read(self, path: Path, part: str) -> Dataset:
        return read_dataset(
            path, self.format, self.target_key, self.skip_invalid, self.validation,
            name=f"{self.name}/{part}",
        )  # fmt: skip

    @cached_property
    def pool(self) -> Dataset:
        """Records available for training and validation."""
        return self._read(self.pool_path, "pool")

    @cached_property
    def test(self) -> Dataset | None:
        """The fixed held-out test set, or ``None`` when the source has none."""
        return None if self.test_path is None else self._read(self.test_path, "test")

    @cached_property
    def trials(self) -> dict[str, dict[str, list[str]]] | None:
        """The study's fine-tuning subsets (trial -> size -> ids), or ``None``."""
        return None if self.trials_path is None else load_trials(self.trials_path)


def study_directory(spec: DatasetSpec, data_dir: Path) -> Path | None:
    """``{data_dir}/{code or alias}`` when it holds a ``pool.json.gz``."""
    for folder in (spec.name, *spec.aliases):
        if (data_dir / folder / "pool.json.gz").is_file():
            return data_dir / folder
    return None


def open_study_directory(
    folder: Path, spec: DatasetSpec | None = None, **options: Any
) -> NamedDataset:
    """A :class:`NamedDataset` from a folder in the study layout.

    Args:
        folder: Folder with ``pool.json.gz`` (and maybe ``test.json.gz``, ``trials.json``).
        spec: Its spec (default: looked up by the folder name, else a local-only spec).
        **options: ``skip_invalid``, ``validation``, ``target_key``, ``format``.
    """
    if spec is None:
        spec = dataset_spec(folder.name) if is_named(folder.name) else DatasetSpec(
            folder.name, (), f"local dataset {folder}", 0, None, None, "", "alignn", None
        )  # fmt: skip
    test, trials = folder / "test.json.gz", folder / "trials.json"
    return NamedDataset(
        spec.name, spec, folder / "pool.json.gz",
        test if test.is_file() else None, trials if trials.is_file() else None, **options,
    )  # fmt: skip


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, sha256: str | None) -> str:
    """Check ``path`` against ``sha256``, or against / into its ``.sha256`` record (TOFU).

    Args:
        path: Downloaded file.
        sha256: Expected hash, or ``None`` to use the hash recorded on first download.
    """
    record = path.with_name(path.name + ".sha256")
    expected = sha256 or (record.read_text().strip() if record.is_file() else None)
    actual = sha256_of(path)
    if expected is None:
        record.write_text(actual + "\n")
    elif actual != expected:
        raise DataError(
            f"{path}: SHA-256 {actual} does not match the expected {expected}; the file is "
            "corrupt or not the published one; delete it to download again"
        )
    return actual


def fetch(
    url: str,
    dest: Path,
    sha256: str | None = None,
    opener: Callable[..., Any] | None = None,
) -> str:
    """Download ``url`` to ``dest`` atomically and verify it; returns its SHA-256.

    Args:
        url: Source URL (``file://`` URLs work, for tests and mirrors).
        dest: Destination file; its folder is created.
        sha256: Expected hash (``None``: record it on first download).
        opener: ``urlopen``-like callable (default: ``urllib.request.urlopen``).
    """
    opener = opener or urllib.request.urlopen
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with opener(url, timeout=60) as response, partial.open("wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or error
        raise DataError(
            f"could not download {url} ({reason}); without internet access, download it "
            f"elsewhere and put it at {dest}"
        ) from None
    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256:
        partial.unlink(missing_ok=True)
        raise DataError(f"download of {url} has SHA-256 {actual}, expected {sha256}; not used")
    partial.replace(dest)
    if sha256 is None:
        dest.with_name(dest.name + ".sha256").write_text(actual + "\n")
    return actual


def extract_member(archive: Path, member: str, folder: Path) -> Path:
    """Extract one named file of a zip archive into ``folder``, refusing unsafe paths.

    Args:
        archive: The zip file.
        member: Name of the file inside the archive.
        folder: Destination folder.
    """
    parts = PurePosixPath(member.replace("\\", "/")).parts
    if not parts or member.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise DataError(f"{archive}: refusing unsafe archive path '{member}'")
    target = folder / parts[-1]
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if member not in names:
                raise DataError(f"{archive}: no '{member}' inside (holds {', '.join(names[:5])})")
            partial = target.with_name(target.name + ".part")
            with zf.open(member) as source, partial.open("wb") as out:
                for block in iter(lambda: source.read(1 << 20), b""):
                    out.write(block)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise DataError(f"{archive}: cannot extract '{member}' ({error})") from None
    partial.replace(target)
    return target


def _downloaded_file(spec: DatasetSpec, data_dir: Path, download: bool) -> Path:
    layout = f"{data_dir / spec.name}/pool.json.gz (with test.json.gz and trials.json)"
    if spec.url is None:
        raise DataError(
            f"dataset '{spec.name}' ({spec.description}) has no public structure file; "
            f"put the study's files at {layout}, or pass --data-dir / data_dir="
        )
    raw = data_dir / "downloads" / spec.file_name
    if raw.is_file():
        verify(raw, spec.sha256)
    elif not download:
        raise DataError(
            f"dataset '{spec.name}' not found: put the study's files at {layout}, or "
            f"download {spec.url} to {raw}"
        )
    else:
        try:
            fetch(spec.url, raw, spec.sha256)
        except DataError as error:
            raise DataError(
                f"dataset '{spec.name}' not found locally; {error}; or put the "
                f"study's files at {layout}"
            ) from None
    if spec.archive_member is None:
        return raw
    extracted = raw.parent / spec.archive_member
    return (
        extracted if extracted.is_file() else extract_member(raw, spec.archive_member, raw.parent)
    )


def resolve_named(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    skip_invalid: bool = False,
    validation: ValidationConfig | None = None,
) -> NamedDataset:
    """Find (or download) a named dataset; its parts are read on first access.

    Args:
        name: Code or alias (see :data:`DATASETS`).
        data_dir: Where to look (default: :func:`default_data_dir`).
        download: Download the public file when nothing is found locally.
        skip_invalid: Drop invalid records instead of refusing a file.
        validation: Check thresholds.
    """
    spec = dataset_spec(name)
    options: dict[str, Any] = {"skip_invalid": skip_invalid, "validation": validation}
    if spec in DEMO_DATASETS:
        return open_study_directory(DEMO_DIR / spec.name.removeprefix("demo-"), spec, **options)
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    local = study_directory(spec, folder)
    if local is not None:
        return open_study_directory(local, spec, **options)
    raw = _downloaded_file(spec, folder, download)
    return NamedDataset(
        spec.name, spec, raw, format=spec.format, target_key=spec.target_key, **options
    )


def check_dataset(
    target: str | Path,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
    data_dir: str | Path | None = None,
    validation: ValidationConfig | None = None,
) -> list[Dataset]:
    """Read and validate everything ``target`` names (what ``matxfer data check`` does).

    Args:
        target: A dataset file or id_prop folder; a folder in the study layout
            (pool, test); or a dataset name (pool and test, see :func:`resolve_named`).
        format: Reader format (files only; default: detected).
        target_key: Target field (files only).
        skip_invalid: Drop invalid records instead of refusing.
        data_dir: Where named datasets live.
        validation: Check thresholds.

    Raises:
        DataError: Something cannot be read or holds invalid records.
    """
    path = Path(target).expanduser()
    options: dict[str, Any] = {"skip_invalid": skip_invalid, "validation": validation}
    if path.is_dir() and (path / "pool.json.gz").is_file():
        named = open_study_directory(path, format=format, target_key=target_key, **options)
    elif path.exists() or not is_named(str(target)):
        if not path.exists() and not path.suffix:
            names = ", ".join(dataset_names())
            raise DataError(f"{target}: no such file or directory, nor a dataset name ({names})")
        return [read_dataset(path, format, target_key, skip_invalid, validation)]
    else:
        named = resolve_named(str(target), data_dir, **options)
    return [part for part in (named.pool, named.test) if part is not None]
