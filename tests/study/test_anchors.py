"""The study's published numbers: the shipped table and matching our groups to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from matxfer.study.anchors import (
    ANCHORS_FILE,
    CITATION,
    load_anchors,
    match_anchor,
    tidy_anchors,
    write_anchors,
)

#: ``../shared/study-results`` beside the project root.
STUDY_RESULTS = Path(__file__).resolve().parents[2].parent / "shared" / "study-results"


def test_shipped_table_starts_with_the_citation() -> None:
    first = ANCHORS_FILE.read_text().splitlines()[0]
    assert first == f"# {CITATION}"
    assert "arXiv:2406.13142" in first
    table = load_anchors()
    assert table.groupby("experiment").size().to_dict() == {
        "jarvis2d": 7,
        "mpt_leave_one_out": 35,
        "pairwise_pt941": 210,
        "scratch": 35,
    }


def test_shipped_table_is_the_study_results_folder(tmp_path: Path) -> None:
    if not (STUDY_RESULTS / "scratch.csv").is_file():
        pytest.skip("../shared/study-results not present")
    write_anchors(tidy_anchors(STUDY_RESULTS), tmp_path / "anchors.csv")
    assert (tmp_path / "anchors.csv").read_text() == ANCHORS_FILE.read_text()


@pytest.mark.parametrize(
    ("group", "experiment", "r2_mean", "mae_mean"),
    [
        (("scratch", "scratch", "ph", 800.0, None, None), "scratch", 0.90353, 0.0433),
        (("finetune", "fe", "ph", 100.0, 941.0, "all"), "pairwise_pt941", 0.6156, 0.10129),
        (
            ("finetune", "mpt-no-ph", "ph", 800.0, None, "all"),
            "mpt_leave_one_out",
            0.97942,
            0.02606,
        ),
        (("finetune", "mpt", "jarvis2d", 100.0, None, "all"), "jarvis2d", 0.67052, 0.12459),
        (("scratch", "scratch", "jarvis2d", 500.0, None, None), "jarvis2d", 0.63546, 0.14754),
    ],
)
def test_matching_groups(group: tuple, experiment: str, r2_mean: float, mae_mean: float) -> None:
    anchor = match_anchor(*group)
    assert anchor is not None
    assert anchor.experiment == experiment
    assert anchor.r2_mean == pytest.approx(r2_mean)
    assert anchor.mae_mean == pytest.approx(mae_mean)


@pytest.mark.parametrize(
    "group",
    [
        ("finetune", "fe", "ph", 100.0, 941.0, "last"),  # the study only trained all layers
        ("finetune", "fe", "ph", 100.0, 5000.0, "all"),  # other PT size
        ("finetune", "fe", "ph", 300.0, 941.0, "all"),  # size the study did not run
        ("finetune", "mpt-no-dc", "ph", 800.0, None, "all"),  # not leave-one-out of ph
        ("finetune", "ph", "ph", 100.0, 941.0, "all"),  # no self-transfer in the study
        ("pretrain", "fe", "fe", None, 941.0, None),
        ("scratch", "scratch", "unknown", 100.0, None, None),
    ],
)
def test_groups_without_anchor(group: tuple) -> None:
    assert match_anchor(*group) is None
