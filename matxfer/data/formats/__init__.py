"""Readers of the supported dataset file formats (see :data:`FORMATS`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matxfer.data.formats.extxyz import read_extxyz
from matxfer.data.formats.folders import ID_PROP, read_idprop
from matxfer.data.formats.json_tables import (
    alignn_records,
    matbench_records,
    read_alignn,
    read_matbench,
)
from matxfer.data.records import Record
from matxfer.errors import Problem

#: A reader: (path, target_key) -> (records, problems of records that failed to parse).
Reader = Callable[[Path, str | None], tuple[list[Record], list[Problem]]]

#: Format name -> reader.
FORMATS: dict[str, Reader] = {
    "alignn": read_alignn,
    "idprop": read_idprop,
    "matbench": read_matbench,
    "extxyz": read_extxyz,
}

__all__ = [
    "FORMATS",
    "ID_PROP",
    "Reader",
    "alignn_records",
    "matbench_records",
    "read_alignn",
    "read_extxyz",
    "read_idprop",
    "read_matbench",
]
