"""ASE extended XYZ: one frame per record.

Each frame's target is one of its info fields (``key=value`` on the comment
line), or a value ASE moved into the frame's calculator results (``energy``).
Without ``target_key`` the field is chosen as for JSON files: ``target`` when
every frame has it, else the only numeric per-frame field; anything else is
refused with the candidates listed.

The file is split into frames here (count line, comment line, that many atom
lines) and each frame is parsed by ASE on its own, so a malformed frame (atom
count that does not match its lines, unparsable values) is one problem naming
the frame's index, line and id, while the other frames still read. Ids come
from an ``id``/``jid``/``name`` info field, else ``{file stem}-{frame}``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from matxfer.data.formats._io import atoms_fields, build_record, read_text, record_id
from matxfer.data.formats.json_tables import collect
from matxfer.data.records import DEFAULT_TARGET, Record
from matxfer.data.validate import InvalidRecordError, as_target, describe_error
from matxfer.errors import DataError, Problem

#: Info fields taken as a frame's id, in order of preference; never the target.
ID_KEYS = ("id", "jid", "name")


@dataclass(frozen=True)
class Frame:
    """One frame's text, as split from the file.

    Attributes:
        line: 1-based line number of its atom-count line.
        text: Count line, comment line and atom lines.
        comment: The comment line (its ``key=value`` info fields), ``""`` if absent.
        problem: Why its layout is broken, or ``None``.
    """

    line: int
    text: str
    comment: str
    problem: str | None = None


def _is_count(line: str) -> bool:
    text = line.strip()
    return text.isascii() and text.isdigit()  # not "²", which isdigit() but int() refuses


def split_frames(text: str, path: Path) -> list[Frame]:
    """The frames of an extended XYZ text, each with any layout problem it has.

    A frame that declares more atoms than it has lines ends where the next
    count line starts; lines after a frame's last atom that are not a count
    line are that frame's problem.

    Raises:
        DataError: The first non-blank line is not an atom count (not extended XYZ).
    """
    lines = text.splitlines()
    frames: list[Frame] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        if not _is_count(lines[i]):
            if not frames:
                raise DataError(
                    f"{path}: cannot be read as extended XYZ (line {i + 1} should be an atom "
                    f"count, found {lines[i].strip()[:40]!r})"
                )
            stray = i
            while i < len(lines) and not _is_count(lines[i]):
                i += 1
            last = frames[-1]
            extra = (
                f"line {stray + 1}: more atom lines follow than the frame's count line "
                f"(line {last.line}) declares"
            )
            frames[-1] = replace(last, problem=last.problem or extra)
            continue
        declared = int(lines[i])
        comment = lines[i + 1] if i + 1 < len(lines) else ""
        end = i + 2
        while end < min(i + 2 + declared, len(lines)) and not _is_count(lines[end]):
            end += 1
        found = max(end - i - 2, 0)
        problem = None
        if i + 1 >= len(lines):
            problem = f"line {i + 1}: the file ends after the frame's atom count (truncated?)"
        elif found < declared:
            problem = (
                f"line {i + 1}: the frame declares {declared} atoms but {found} atom lines follow"
                + (" (the file ends: truncated?)" if end >= len(lines) else "")
            )
        frames.append(Frame(i + 1, "\n".join(lines[i:end]) + "\n", comment, problem))
        i = max(end, i + 1)
    if not frames:
        raise DataError(f"{path}: no frames")
    return frames


def _comment_info(comment: str) -> dict[str, Any]:
    """The info fields of a comment line, or ``{}`` when ASE cannot parse it."""
    from ase.io.extxyz import key_val_str_to_dict

    try:
        return key_val_str_to_dict(comment)
    except Exception:  # a malformed comment has no readable id; the frame's problem says why
        return {}


def frame_id(frame: Frame, atoms: Any, index: int, stem: str, target_key: str | None) -> str:
    """The frame's ``id``/``jid``/``name`` info field (read from its comment line when
    the frame did not parse), else ``{stem}-{index}``."""
    info = getattr(atoms, "info", None) or _comment_info(frame.comment)
    for name in ID_KEYS:
        if name in info and name != target_key:
            try:
                return record_id(info[name])
            except InvalidRecordError:
                break
    return f"{stem}-{index}"


def _parse(frame: Frame) -> Any:
    """The frame as ASE ``Atoms``; :class:`InvalidRecordError` if it is malformed."""
    import ase.io  # deferred: ASE is only needed for this format

    if frame.problem is not None:
        raise InvalidRecordError(frame.problem)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ase.io.read(io.StringIO(frame.text), format="extxyz")
    except Exception as error:
        raise InvalidRecordError(
            f"line {frame.line}: the frame cannot be read as extended XYZ ({describe_error(error)})"
        ) from None


def frame_info(atoms: Any) -> dict[str, Any]:
    """Info fields plus the calculator results ASE moved out of them (``energy``...)."""
    info = dict(atoms.info)
    calc = getattr(atoms, "calc", None)
    if calc is not None:
        info.update({k: v for k, v in getattr(calc, "results", {}).items() if k not in info})
    return info


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def default_target_key(infos: list[dict[str, Any]], path: Path) -> str:
    """``target`` when every frame has it, else the only numeric info field.

    Raises:
        DataError: No numeric field, or several; the message lists them.
    """
    if all(DEFAULT_TARGET in info for info in infos):
        return DEFAULT_TARGET
    numeric: dict[str, int] = {}
    for info in infos:
        for key, value in info.items():
            if key not in ID_KEYS and _is_number(value):
                numeric[key] = numeric.get(key, 0) + 1
    if len(numeric) == 1:
        return next(iter(numeric))
    found = (
        "numeric info fields: "
        + ", ".join(f"{k} ({n} of {len(infos)} frames)" for k, n in sorted(numeric.items()))
        if numeric
        else "no frame has a numeric info field"
    )
    raise DataError(
        f"{path}: cannot tell which per-frame info field is the target ({found}); "
        "name it with target_key / --target-key"
    )


def read_extxyz(path: Path, target_key: str | None = None) -> tuple[list[Record], list[Problem]]:
    """Read an extended XYZ file (optionally compressed).

    Args:
        path: The file.
        target_key: The per-frame info field holding the target (default: see
            :func:`default_target_key`); it is renamed ``target``.
    """
    frames = split_frames(read_text(path), path)
    parsed: list[Any] = []
    for frame in frames:
        try:
            parsed.append(_parse(frame))
        except InvalidRecordError as error:
            parsed.append(error)
    source, stem = str(path), path.name.split(".")[0]
    good = [atoms for atoms in parsed if not isinstance(atoms, InvalidRecordError)]
    if not good:
        problems = [
            Problem(source, i, frame_id(frame, None, i, stem, target_key), str(error))
            for i, (frame, error) in enumerate(zip(frames, parsed, strict=True))
        ]
        raise DataError(f"{path}: cannot be read as extended XYZ (no frame parses)", problems)
    key = target_key or default_target_key([frame_info(atoms) for atoms in good], path)

    def item_id(item: tuple[Frame, Any], index: int) -> str:
        return frame_id(item[0], item[1], index, stem, key)

    def parse(item: tuple[Frame, Any], index: int) -> Record:
        atoms = item[1]
        if isinstance(atoms, InvalidRecordError):
            raise atoms
        info = frame_info(atoms)
        if key not in info:
            fields = ", ".join(sorted(info)) or "none"
            raise InvalidRecordError(f"frame has no info field '{key}' (fields: {fields})")
        value = info[key]
        if getattr(value, "ndim", 0) == 0 and hasattr(value, "item"):
            value = value.item()  # numpy scalar from ASE's parser
        target = as_target(value, key)
        cell, symbols, positions = atoms_fields(atoms)
        return build_record(
            item_id(item, index), cell, symbols, positions, True,
            {DEFAULT_TARGET: target}, source, index,
        )  # fmt: skip

    return collect(list(zip(frames, parsed, strict=True)), source, parse, item_id)
