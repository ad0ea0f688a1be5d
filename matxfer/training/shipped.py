"""Pre-trained models shipped inside the package, so ``--from mpt7`` works offline.

Each shipped model is two files in :data:`SHIPPED_DIR`:

* ``NAME.pt``: a lean matxfer checkpoint (see :mod:`~matxfer.training.checkpoint`)
  whose floating-point weights are stored as float16, half the bytes of float32
  (the target transform is JSON in the payload, so it stays exact). Loading casts
  the weights back to float32 (``load_state_dict`` copies into the float32
  parameters of the rebuilt model), so fine-tuning and prediction run in float32
  from float16-rounded starting values (relative error at most 2⁻¹¹); the card's
  test metrics are measured with these rounded weights.
* ``NAME.json``: the model card: what it predicts, the data it was trained on (the
  datasets, their hashes, how many of each property's records, which test crystals
  were removed), the exact command, its training time, its test metrics, the
  sha256 of ``NAME.pt`` and the licence of the data.

A name resolves wherever a checkpoint path is accepted
(:func:`~matxfer.training.checkpoint.resolve_checkpoint`: ``finetune --from``,
``predict``, ``rank-sources``); an existing file or directory of that name wins,
so a run directory called ``fe`` is still that run directory.

The idea follows MatGL's and MACE's pre-trained model registries (a named model
with its provenance, loadable without network); here the weights are inside the
wheel because the project's users may have no network at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matxfer.atomic import atomic_path
from matxfer.data.download import sha256_of
from matxfer.errors import MatxferError

#: Where the shipped models live inside the package.
SHIPPED_DIR = Path(__file__).with_name("shipped_models")
#: Suffix of a shipped model's weights, and of its card.
WEIGHTS_SUFFIX = ".pt"
CARD_SUFFIX = ".json"
#: Card keys every shipped model must have (checked by the tests and by :func:`pack`).
CARD_KEYS = (
    "name",
    "summary",
    "properties",
    "data",
    "recipe",
    "metrics",
    "weights",
    "license",
)


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its weights file and its card.

    Attributes:
        name: What ``--from`` accepts (``mpt7``, ``mpt7-no-ph``, ``fe`` ...).
        weights: The ``NAME.pt`` file.
        card: The parsed ``NAME.json``.
    """

    name: str
    weights: Path
    card: dict[str, Any]

    @property
    def card_path(self) -> Path:
        """The ``NAME.json`` card file."""
        return self.weights.with_suffix(CARD_SUFFIX)

    @property
    def properties(self) -> list[str]:
        """The properties it predicts, in output order."""
        return list(self.card["properties"])

    @property
    def summary(self) -> str:
        """One line saying what it is."""
        return str(self.card["summary"])

    def verify(self) -> None:
        """Check the weights file against the sha256 in the card.

        Raises:
            MatxferError: The file was changed or truncated (reinstalling restores it).
        """
        expected = self.card["weights"]["sha256"]
        actual = sha256_of(self.weights)
        if actual != expected:
            raise MatxferError(
                f"shipped model {self.name!r}: {self.weights} has sha256 {actual[:12]}…, its "
                f"card says {expected[:12]}…; the installed file was changed or truncated: "
                "reinstall matxfer"
            )

    def test_r2(self) -> dict[str, float | None]:
        """Test R² per property, as the card records it (with the shipped weights)."""
        return {name: values.get("r2") for name, values in self.card["metrics"]["test"].items()}

    def markdown(self) -> str:
        """The card as Markdown, for ``matxfer models show`` and fine-tuned model cards."""
        card, data, recipe = self.card, self.card["data"], self.card["recipe"]
        lines = [
            f"# Shipped model `{self.name}`",
            "",
            self.summary,
            "",
            f"- predicts: {', '.join(self.properties)}",
            f"- architecture: {recipe['architecture']}",
            f"- weights: `{self.weights.name}`, {card['weights']['bytes'] / 1024:.0f} KiB "
            f"({card['weights']['dtype']}), sha256 `{card['weights']['sha256']}`",
            "",
            "## Data",
            "",
            data["description"],
            "",
            "| property | source | pool | removed test crystals | used |",
            "|---|---|---|---|---|",
        ]
        for name, item in data["properties"].items():
            lines.append(
                f"| {name} | {item['source']} | {item['pool']} | "
                f"{item['removed_test_structures']} | {item['used']} |"
            )
        lines += [
            "",
            f"{data['merged']} records after merging by crystal: {data['train']} train, "
            f"{data['val']} validation. Left out of training: "
            f"{', '.join(data['excluded_properties']) or 'none'}.",
            "",
            "## Recipe",
            "",
            f"```\n{recipe['command']}\n```",
            "",
            f"{recipe['epochs']} epochs (best {recipe['best_epoch']}), seed {recipe['seed']}, "
            f"{recipe['seconds'] / 60:.1f} min on {recipe['machine']}.",
            "",
            "## Test metrics",
            "",
            card["metrics"]["description"],
            "",
            "| property | R² | MAE | n |",
            "|---|---|---|---|",
        ]
        for name, values in card["metrics"]["test"].items():
            lines.append(
                f"| {name} | {_fmt(values.get('r2'))} | {_fmt(values.get('mae'))} | "
                f"{values.get('n')} |"
            )
        lines += ["", "## Licence", "", card["license"], ""]
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise MatxferError(f"{path}: unreadable model card ({error}); reinstall matxfer") from None
    missing = [key for key in CARD_KEYS if key not in card]
    if missing:
        raise MatxferError(f"{path}: model card lacks {missing}; reinstall matxfer")
    return card


def shipped_models(directory: Path | None = None) -> dict[str, ShippedModel]:
    """Every shipped model in ``directory`` (default :data:`SHIPPED_DIR`), by name (sorted)."""
    directory = directory or SHIPPED_DIR
    models = {}
    # mpt7 before its leave-one-out variants mpt7-no-*.
    for card_path in sorted(directory.glob(f"*{CARD_SUFFIX}"), key=lambda p: p.stem.split("-")):
        name = card_path.stem
        weights = card_path.with_suffix(WEIGHTS_SUFFIX)
        if weights.is_file():
            models[name] = ShippedModel(name, weights, _read_card(card_path))
    return models


def shipped_model(name: str, directory: Path | None = None) -> ShippedModel:
    """The shipped model called ``name``.

    Raises:
        MatxferError: No such model (the message lists those there are).
    """
    models = shipped_models(directory)
    if name not in models:
        raise MatxferError(
            f"no shipped model {name!r}; shipped models: {', '.join(models) or 'none'} "
            "(matxfer models list)"
        )
    return models[name]


def shipped_name_of(path: str | Path, directory: Path | None = None) -> str | None:
    """The name of the shipped model whose weights file ``path`` is, else ``None``."""
    path, directory = Path(path), directory or SHIPPED_DIR
    if path.suffix != WEIGHTS_SUFFIX or path.resolve().parent != directory.resolve():
        return None
    return path.stem if path.with_suffix(CARD_SUFFIX).is_file() else None


def resolve_shipped(name: str, directory: Path | None = None) -> Path | None:
    """The weights file of shipped model ``name`` (verified), or ``None`` if there is none."""
    model = shipped_models(directory).get(str(name))
    if model is None:
        return None
    model.verify()
    return model.weights


def half_precision(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with floating-point tensors stored as float16 (anything else kept)."""
    import torch  # here: `matxfer models list` needs no torch

    def is_float(value: Any) -> bool:
        return isinstance(value, torch.Tensor) and value.is_floating_point()

    limit = torch.finfo(torch.float16).max
    too_large = [
        key
        for key, value in state.items()
        if is_float(value) and value.numel() and value.abs().max().item() > limit
    ]
    if too_large:
        raise MatxferError(f"weights {too_large} exceed float16's range; cannot ship them")
    return {key: value.half() if is_float(value) else value for key, value in state.items()}


def pack(
    checkpoint: dict[str, Any], name: str, card: dict[str, Any], directory: Path | None = None
) -> ShippedModel:
    """Write ``NAME.pt`` (float16 weights) and ``NAME.json`` (``card`` + the file's hash).

    Args:
        checkpoint: A matxfer checkpoint dict (``state_dict`` + ``matxfer`` payload,
            e.g. from :func:`~matxfer.training.checkpoint.read_checkpoint`); Lightning's
            optimizer and loop states are dropped.
        name: The model's name.
        card: Its card (every key of :data:`CARD_KEYS` but ``name`` and ``weights``).
        directory: Where to write (default: the package's folder).
    """
    missing = [key for key in CARD_KEYS if key not in card and key not in ("name", "weights")]
    if missing:
        raise MatxferError(f"model card of {name!r} lacks {missing}")
    import torch

    directory = directory or SHIPPED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}{WEIGHTS_SUFFIX}"
    lean = {
        "state_dict": half_precision(checkpoint["state_dict"]),
        "matxfer": checkpoint["matxfer"],
        "epoch": checkpoint.get("epoch"),
    }
    with atomic_path(weights) as tmp:
        torch.save(lean, tmp)
    card = {
        **card,
        "name": name,
        "weights": {
            "file": weights.name,
            "dtype": "float16",
            "bytes": weights.stat().st_size,
            "sha256": sha256_of(weights),
        },
    }
    with atomic_path(directory / f"{name}{CARD_SUFFIX}") as tmp:
        Path(tmp).write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return ShippedModel(name, weights, card)


def shipped_record(path: str | Path) -> dict[str, str]:
    """``{"shipped": name, "description": summary}`` for a shipped weights file, else ``{}``
    (merged into ``transfer.json``'s ``pretrained`` entry)."""
    name = shipped_name_of(path)
    if name is None:
        return {}
    return {"shipped": name, "description": f"shipped model {name}: {shipped_model(name).summary}"}


def shipped_leakage_reason(name: str, error: Exception) -> str:
    """Why the leakage audit of a fine-tuning from shipped model ``name`` did not run, and
    what its card says anyway."""
    spec = shipped_model(name).card["data"]["spec"]
    known = (
        "by construction none of the crystals of the study's seven fixed test sets is in it"
        if spec.get("exclude_test_structures")
        else "its card lists what it was trained on (matxfer models show " + name + ")"
    )
    return (
        f"the pre-training data of shipped model {name!r} could not be read ({error}); pass "
        f"--data-dir where the study's datasets are to audit it; {known}"
    )
