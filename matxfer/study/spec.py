"""A study spec: one YAML file declaring the grid of a pre-train / fine-tune study.

The handles are those of Devi, Butler & Sai Gautam, "Optimal pre-train/fine-tune
strategies for accurate material property predictions" (npj Comput. Mater. 2024,
arXiv 2406.13142): pre-training (PT) source and size, multi-property
pre-training (MPT, all properties or leave-one-out), fine-tuning (FT) targets
and sizes, the study's five trials (``trials.json`` subsets) or seeded samples,
FT strategy and head, learning rate, sampling, scratch baselines, profile.

Example (see ``examples/studies/`` for more)::

    name: mini
    data_dir: ../shared/datasets     # relative to this file
    profile: fast                    # fast | paper | path to a config YAML
    trials: [1, 2, 3]                # the study's subsets; or `seeds: [0, 1, 2]` alone
    pretrain:
      - {data: fe, size: 941, seed: 1, epochs: 50}
      - {name: mpt, mpt: [fe, bg, gv, ph, dc, pz, ebg], leave_one_out: true, size: 941}
      - {name: shipped-mpt7, from: mpt7}        # an already pre-trained model: no PT job
    finetune:
      - {targets: [ph, dc], sizes: [100, 800], heads: [reuse], sources: [fe]}
      - {targets: [ph, dc], sizes: [100, 800], heads: [new], sources: [mpt, shipped-mpt7]}
    scratch: true

Unknown keys and bad values are reported with the file, line and key, and the
allowed values (:func:`load_spec`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from matxfer.errors import ConfigError
from matxfer.training.config import SamplingName, describe_yaml_error

#: File name of the spec copy kept in a study directory (``study retry`` reads it).
SPEC_COPY = "spec.yaml"
#: Replaced by the FT target in a ``from`` source (``mpt7-no-{target}``).
TARGET_FIELD = "{target}"
#: Keys of a pre-training entry that still apply when it names a model (``from``).
EXTERNAL_KEYS = ("name", "from_")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PretrainEntry(_Strict):
    """One pre-training source (one PT job per size × seed; per FT target for leave-one-out),
    or an already pre-trained model (``from``: no PT job).

    Args:
        name: Label used in tables and job ids (default: ``data``, the last part of
            ``from``, or ``mpt``); ``{target}`` in it is replaced by the FT target.
        from_ (``from`` in YAML): An already pre-trained model instead of a pre-training:
            a run directory or checkpoint file (relative to the spec file), a model
            shipped in the package (``mpt7``, ``mpt7-no-ph``, ``fe``, ...) or
            ``chgnet``; ``{target}`` is replaced by the FT target
            (``mpt7-no-{target}``). Passed as ``pretrained`` to
            :func:`matxfer.transfer.finetune.finetune`; only ``name`` goes with it.
        data: Single-property dataset (named dataset, study folder or file).
        mpt: Datasets of a multi-property pre-training, merged by crystal.
        leave_one_out: MPT only: one pre-training per FT target, without that
            target's property (labelled ``{name}-no-{target}``).
        sizes: Records per property drawn from the pool; ``None`` = the whole pool. A
            single property's size must fit its pool; MPT takes at most ``size`` per
            property (all of a smaller pool).
        sampling: How the records are drawn.
        seeds: Seeds of the draw, split and initialisation (several = several PT samples).
        epochs: Epochs (default: the profile's).
        config: Training-config overrides for this pre-training.
        exclude_test_structures: Leave out crystals of the FT targets' test sets
            (single property) or of every property's test set (MPT).
    """

    # ``from`` is a Python keyword: the field is ``from_``, read and written as ``from``.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )

    name: str | None = None
    from_: str | None = Field(None, alias="from", min_length=1)
    data: str | None = None
    mpt: list[str] | None = None
    leave_one_out: bool = False
    sizes: list[int | None] = Field(default_factory=lambda: [None])
    sampling: SamplingName = "random"
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0])
    epochs: int | None = Field(None, ge=1)
    config: dict[str, Any] = Field(default_factory=dict)
    exclude_test_structures: bool = False

    @field_validator("sizes", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]

    @property
    def label(self) -> str:
        """The name ``sources`` and tables use for this source."""
        if self.name or self.data:
            return self.name or self.data  # type: ignore[return-value]
        return (Path(self.from_).name or self.from_) if self.from_ else "mpt"

    @property
    def external(self) -> bool:
        """Names an already pre-trained model (``from``) rather than a pre-training."""
        return self.from_ is not None

    def pretrained_for(self, target: str) -> str:
        """``from`` for the FT target ``target`` (``{target}`` replaced)."""
        return (self.from_ or "").replace(TARGET_FIELD, target)

    def label_for(self, target: str) -> str:
        """The source label of the fine-tunings of ``target`` (``{target}`` replaced)."""
        return self.label.replace(TARGET_FIELD, target)


class FinetuneGrid(_Strict):
    """Fine-tuning (and scratch) jobs: targets × sizes × strategies × heads × lrs × sources.

    Args:
        targets: FT datasets (named datasets or study folders with a fixed test set).
        sizes: FT sizes (training + validation records; the study's 10 to 800).
        strategies: FT strategies (``all``, ``last``, ``freeze:GROUPS``, ...).
        heads: ``reuse``, ``new`` or ``deeper``.
        lrs: Peak learning rates (``null``: the profile's).
        sources: PT sources (labels of ``pretrain`` entries) to fine-tune from
            (default: every one).
        epochs: Epochs of FT and scratch jobs (default: the profile's).
        config: Training-config overrides for these jobs.
    """

    targets: list[str] = Field(min_length=1)
    sizes: list[int] = Field(min_length=1)
    strategies: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    heads: list[Literal["reuse", "new", "deeper"]] = Field(
        default_factory=lambda: ["reuse"], min_length=1
    )
    lrs: list[float | None] = Field(default_factory=lambda: [None], min_length=1)
    sources: list[str] | None = None
    epochs: int | None = Field(None, ge=1)
    config: dict[str, Any] = Field(default_factory=dict)


class StudySpec(_Strict):
    """A whole study.

    Args:
        name: Study name.
        data_dir: Folder of named datasets (relative to the spec file).
        profile: ``fast``, ``paper`` or a training-config YAML (relative to the spec file).
        config: Training-config overrides for every job.
        trials: The study's trials (``trials.json`` subsets); ``None``: seeded
            samples of each size from the pool instead.
        seeds: Model seeds per trial (or sample seeds without trials).
        sampling: How FT subsets are drawn without trials.
        scratch: Train scratch baselines for every target × size × trial × seed.
        test_fraction: Share of a target's pool held out as its test set when it has
            no fixed one (e.g. ``jarvis2d``), the same records for every job.
        test_seed: Seed of that held-out share.
        pretrain: PT sources.
        finetune: FT grids (one mapping or a list of them).
    """

    name: str = "study"
    data_dir: str | None = None
    profile: str = "fast"
    config: dict[str, Any] = Field(default_factory=dict)
    trials: list[int] | None = None
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)
    sampling: SamplingName = "random"
    scratch: bool = True
    test_fraction: float = Field(0.1, gt=0, lt=1)
    test_seed: int = 0
    pretrain: list[PretrainEntry] = Field(default_factory=list)
    finetune: list[FinetuneGrid] = Field(min_length=1)
    _source: str = PrivateAttr("spec")
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    def error(self, loc: tuple[Any, ...], message: str) -> ConfigError:
        """A ConfigError naming the spec file, the line of ``loc`` and the key path."""
        line = _line_of(loc, self._lines)
        where = f"{self._source}:{line}" if line else self._source
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        return ConfigError(f"{where}: {key}: {message}")

    @field_validator("finetune", mode="before")
    @classmethod
    def _grid_or_grids(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value


# ---------------------------------------------------------------- YAML with line numbers


def _key_lines(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> None:
    """Map every key path of a composed YAML document to its 1-based line."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            lines[child] = key.start_mark.line + 1
            _key_lines(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _key_lines(item, (*path, index), lines)


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    """The line of the deepest key of ``loc`` that the file has."""
    for end in range(len(loc), 0, -1):
        key = tuple(str(part) if isinstance(part, str) else part for part in loc[:end])
        if key in lines:
            return lines[key]
    return None


def _allowed(item: dict[str, Any], model: type[BaseModel] | None) -> str:
    if item["type"] == "extra_forbidden" and model is not None:
        keys = [field.alias or name for name, field in model.model_fields.items()]
        return f" (allowed keys: {', '.join(keys)})"
    expected = (item.get("ctx") or {}).get("expected")
    return f" (allowed: {expected})" if expected else ""


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The spec section a location falls in, for listing its allowed keys."""
    names = [part for part in loc[:-1] if isinstance(part, str)]
    if names[:1] == ["pretrain"]:
        return PretrainEntry
    if names[:1] == ["finetune"]:
        return FinetuneGrid
    return StudySpec if not names else None


def _describe(error: ValidationError, source: str, lines: dict[tuple[Any, ...], int]) -> str:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        line = _line_of(loc, lines)
        where = f"{source}:{line}" if line else source
        key = ".".join(str(part) for part in loc) or "<top level>"
        if item["type"] == "extra_forbidden":
            what = f"unknown key {key!r}"
        elif item["type"] == "missing":
            what = f"missing key {key!r}"  # its input is the whole enclosing mapping
        else:
            what = f"{key}={item.get('input')!r}: {item['msg']}"
        problems.append(f"{where}: {what}{_allowed(item, _model_at(tuple(item['loc'])))}")
    return "; ".join(problems)


def parse_spec(text: str, source: str = "spec") -> StudySpec:
    """Validate a spec from YAML text.

    Raises:
        ConfigError: Not YAML, not a mapping, or invalid keys/values (file, line, key).
    """
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {describe_yaml_error(error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study spec must be a mapping of keys to values")
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _key_lines(node, (), lines)
    if isinstance(data.get("finetune"), dict):  # one grid, validated as a list of one
        grid = {k: v for k, v in lines.items() if k[:1] == ("finetune",)}
        lines.update({("finetune", 0, *k[1:]): v for k, v in grid.items()})
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"invalid study spec: {_describe(error, source, lines)}") from None
    spec._source, spec._lines = source, lines
    return spec


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a spec file; relative ``data_dir``/``profile`` paths are made
    absolute against the file's folder.

    Raises:
        ConfigError: Missing or unreadable file, or an invalid spec.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: study spec not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read study spec: {error}") from None
    spec = parse_spec(text, str(path))
    return with_paths_from(spec, path.resolve().parent)


def _from_path(value: str, folder: Path, targets: list[str]) -> str:
    """``value`` made absolute against ``folder`` when it names a path there (for one of
    ``targets`` if it holds ``{target}``); else as it is (a shipped model, ``chgnet``, a
    path relative to the working directory)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    names = [value.replace(TARGET_FIELD, t) for t in targets] if TARGET_FIELD in value else [value]
    if any((folder / Path(name).expanduser()).exists() for name in names):
        return str(folder / path)
    return value


def with_paths_from(spec: StudySpec, folder: Path) -> StudySpec:
    """``spec`` with ``data_dir``, a profile config file and the paths of ``from`` sources
    made absolute against ``folder`` (so the copy in a study directory reads the same)."""
    updates: dict[str, Any] = {}
    if spec.data_dir is not None:
        updates["data_dir"] = str((folder / Path(spec.data_dir).expanduser()).resolve())
    if spec.profile not in ("fast", "paper"):
        updates["profile"] = str((folder / Path(spec.profile).expanduser()).resolve())
    if any(entry.external for entry in spec.pretrain):
        targets = sorted({t for grid in spec.finetune for t in grid.targets})
        updates["pretrain"] = [
            entry.model_copy(update={"from_": _from_path(entry.from_, folder, targets)})
            if entry.from_ is not None
            else entry
            for entry in spec.pretrain
        ]
    copy = spec.model_copy(update=updates)
    copy._source, copy._lines = spec._source, spec._lines
    return copy
