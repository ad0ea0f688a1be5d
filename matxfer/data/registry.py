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
Downloading, verifying and extracting live in :mod:`matxfer.data.download`.
``ebg`` (experimental band gaps) is only available locally: Matminer holds
compositions only, and the study matched structures to about half of them.
"""

from __future__ import annotations

import os
import urllib.request  # noqa: F401  # tests patch urllib.request.urlopen through this module
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from matxfer.data.download import extract_member, fetch, verify
from matxfer.data.download import sha256_of as sha256_of  # re-exported
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
    # Checked against the archive's CRC-32 on every use; extracted again when it differs.
    return extract_member(raw, spec.archive_member, raw.parent)


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


def resolve_data(
    data: str | Path,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    format: str | None = None,
    target_key: str | None = None,
    **options: Any,
) -> NamedDataset | None:
    """What ``data`` names: a study-layout folder or a named dataset, else ``None`` (a file).

    The one place that tells the three apart, for every command that takes DATA: an
    existing folder with ``pool.json.gz`` is a study folder; a name that is no existing
    path but a dataset code or alias is resolved under ``data_dir`` (:func:`resolve_named`);
    anything else is a dataset file or folder for :func:`~matxfer.data.readers.read_dataset`.

    Args:
        data: Path or dataset name.
        data_dir: Where named datasets live (default: :func:`default_data_dir`).
        download: Download a named dataset's public file when nothing is found locally.
        format: Reader format of a study folder's files (named datasets know theirs).
        target_key: Target field of a study folder's records (named datasets know theirs).
        **options: ``skip_invalid``, ``validation``.
    """
    path = Path(data).expanduser()
    if path.is_dir() and (path / "pool.json.gz").is_file():
        return open_study_directory(path, format=format, target_key=target_key, **options)
    if not path.exists() and is_named(str(data)):
        return resolve_named(str(data), data_dir, download, **options)
    return None


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
    named = resolve_data(target, data_dir, format=format, target_key=target_key, **options)
    if named is None:
        if not path.exists() and not path.suffix:
            names = ", ".join(dataset_names())
            raise DataError(f"{target}: no such file or directory, nor a dataset name ({names})")
        return [read_dataset(path, format, target_key, skip_invalid, validation)]
    return [part for part in (named.pool, named.test) if part is not None]
