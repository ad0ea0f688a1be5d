"""Study specs: validation with file/line/key, expansion into jobs, stable ids, bad specs."""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matxfer.cli import app
from matxfer.data.registry import DEMO_DIR
from matxfer.errors import ConfigError
from matxfer.study.cost import Calibration, simulate_wall
from matxfer.study.jobs import plan_study
from matxfer.study.spec import load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "studies"

BASE = """\
name: t
profile: fast
seeds: [0, 1]
pretrain:
  - {name: fe, data: demo-fe, sizes: 100, seeds: [1], epochs: 2}
finetune:
  targets: [demo-ph]
  sizes: [20, 40]
  strategies: [all, last]
  epochs: 2
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_expands_into_jobs_each_once(tmp_path: Path) -> None:
    plan = plan_study(load_spec(write(tmp_path, BASE)))
    # 1 PT; scratch 2 sizes × 2 seeds; FT 2 sizes × 2 seeds × 2 strategies.
    assert plan.counts() == {"pretrain": 1, "scratch": 4, "finetune": 8}
    pt = plan.jobs[0]
    assert pt.kind == "pretrain" and pt.size == 100 and pt.seed == 1 and pt.epochs == 2
    assert all(j.depends_on == pt.id for j in plan.jobs if j.kind == "finetune")
    assert len({j.id for j in plan.jobs}) == len(plan.jobs)
    assert plan.dependants() == {pt.id: [j.id for j in plan.jobs if j.kind == "finetune"]}


def test_ids_are_stable_and_editing_the_spec_only_adds_jobs(tmp_path: Path) -> None:
    first = {j.id for j in plan_study(load_spec(write(tmp_path, BASE))).jobs}
    again = {j.id for j in plan_study(load_spec(write(tmp_path, BASE, "b.yaml"))).jobs}
    assert first == again
    grown = BASE.replace("sizes: [20, 40]", "sizes: [20, 40, 60]")
    more = {j.id for j in plan_study(load_spec(write(tmp_path, grown, "c.yaml"))).jobs}
    assert first < more and len(more - first) == 2 + 4  # scratch and FT at size 60
    other_lr = BASE.replace("epochs: 2\n", "epochs: 2\n  lrs: [0.002]\n", 1)
    changed = {j.id for j in plan_study(load_spec(write(tmp_path, other_lr, "d.yaml"))).jobs}
    assert len(first & changed) == 1  # only the pre-training is the same job


def test_data_hash_enters_the_id(tmp_path: Path) -> None:
    folder = tmp_path / "myph"
    shutil.copytree(DEMO_DIR / "ph", folder)
    spec = BASE.replace("targets: [demo-ph]", f"targets: [{folder}]")
    before = {
        j.id for j in plan_study(load_spec(write(tmp_path, spec))).jobs if j.kind != "pretrain"
    }
    with gzip.open(folder / "test.json.gz", "rt") as handle:
        text = handle.read()
    with gzip.open(folder / "test.json.gz", "wt") as handle:
        handle.write(text + " ")  # same records, other bytes
    after = {
        j.id
        for j in plan_study(load_spec(write(tmp_path, spec, "e.yaml"))).jobs
        if j.kind != "pretrain"
    }
    assert before.isdisjoint(after)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("targets: [demo-ph]", "targets: [nosuchset]"), "spec.yaml:7: finetune[0].targets"),
        (("sizes: 100", "sizes: 5000"), "pretrain[0].sizes: size 5000 is outside 2..2000"),
        (("strategies: [all, last]", "strategies: [all, lats]"), "finetune[0].strategies[1]"),
        (
            ("epochs: 2\n", "epochs: 2\n  heds: [new]\n"),
            "spec.yaml:11: unknown key 'finetune.0.heds'",
        ),
        (("seeds: [0, 1]", "seeds: [0, 1]\ntrials: [1]"), "size 20 is not a subset of trial 1"),
    ],
)
def test_bad_specs_fail_at_plan_naming_file_line_key(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    text = BASE.replace(*change)
    with pytest.raises(ConfigError) as error:
        plan_study(load_spec(write(tmp_path, text)))
    message = str(error.value)
    assert expected in message
    assert str(tmp_path / "spec.yaml") in message


def test_allowed_values_are_listed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"allowed keys: .*targets, sizes, strategies"):
        load_spec(write(tmp_path, BASE.replace("epochs: 2\n", "epochs: 2\n  sise: 1\n")))
    with pytest.raises(ConfigError, match=r"'reuse', 'new' or 'deeper'"):
        load_spec(write(tmp_path, BASE + "  heads: [old]\n"))
    with pytest.raises(ConfigError, match=r"demo-ph.*available|choose one of|not a file"):
        plan_study(load_spec(write(tmp_path, BASE.replace("demo-ph", "demo-xx"))))


def test_ft_size_with_no_trials_file(tmp_path: Path) -> None:
    folder = tmp_path / "notrials"
    folder.mkdir()
    for name in ("pool.json.gz", "test.json.gz"):
        shutil.copy(DEMO_DIR / "ph" / name, folder / name)
    spec = BASE.replace("targets: [demo-ph]", f"targets: [{folder}]") + "trials: [1]\n"
    with pytest.raises(ConfigError, match=r"has no trials\.json"):
        plan_study(load_spec(write(tmp_path, spec)))


def test_mpt_leave_one_out_and_head_rules(tmp_path: Path) -> None:
    spec = BASE.replace(
        "  - {name: fe, data: demo-fe, sizes: 100, seeds: [1], epochs: 2}",
        "  - {name: mpt, mpt: [demo-fe, demo-ph], leave_one_out: true, sizes: 50, epochs: 2}",
    )
    with pytest.raises(ConfigError, match="multi-property model: its head cannot be reused"):
        plan_study(load_spec(write(tmp_path, spec)))
    plan = plan_study(load_spec(write(tmp_path, spec + "  heads: [new]\n", "b.yaml")))
    pts = [j for j in plan.jobs if j.kind == "pretrain"]
    assert [j.target for j in pts] == ["mpt-no-demo-ph"]
    assert pts[0].settings["mpt"] == ["demo-fe"]


def test_shipped_specs_are_valid() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        spec = load_spec(path)  # the shared datasets may be absent: parse only
        assert spec.finetune, path
    plan = plan_study(load_spec(EXAMPLES / "smoke.yaml"))
    assert plan.counts() == {"pretrain": 2, "scratch": 4, "finetune": 8}


def test_plan_command_prints_jobs_and_dependencies(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["study", "plan", str(write(tmp_path, BASE)), "--no-estimate"])
    assert result.exit_code == 0, result.output
    assert "13 jobs: 1 pretrain, 4 scratch, 8 finetune" in result.output
    assert "8 fine-tuning(s) wait for it" in result.output


def test_bad_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = write(tmp_path, BASE.replace("sizes: [20, 40]", "sizes: [20, 99999]"))
    done = subprocess.run(
        [sys.executable, "-m", "matxfer", "study", "plan", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "finetune[0].sizes" in done.stderr and "99999" in done.stderr


def test_wall_time_simulation_waits_for_pretraining(tmp_path: Path) -> None:
    plan = plan_study(load_spec(write(tmp_path, BASE)))
    seconds = {j.id: (10.0 if j.kind == "pretrain" else 1.0) for j in plan.jobs}
    # Two workers: scratch runs beside the PT; 8 FT jobs after it, two at a time.
    assert simulate_wall(plan.jobs, seconds, 2) == pytest.approx(14.0)
    assert simulate_wall(plan.jobs, seconds, 1) == pytest.approx(22.0)
    calibration = Calibration(0.01, 1e-4, 1e-3, 5.0, 4.0, "cpu", 1, "now", "key")
    job = plan.jobs[1]  # scratch, size 20: 18 training structures, batch 16
    train = 2 * 0.01 + 18 * job.mean_atoms * 1e-4
    test = math.ceil(job.test_structures / 64) * 0.01 + job.test_structures * job.mean_atoms * 1e-4
    expected = 5.0 + job.records_read * 1e-3 + job.epochs * train + test / 3
    assert job.records_read == 1138 + 127  # the demo-ph pool and test set
    assert calibration.job_seconds(job) == pytest.approx(expected)


def test_parse_spec_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_spec("- 1\n- 2\n", "x.yaml")
    with pytest.raises(ConfigError, match="not valid YAML: line 2, column 1: expected") as bad:
        parse_spec("a: [\n", "x.yaml")
    assert "\n" not in str(bad.value)  # one line, as the CLI prints errors
    with pytest.raises(ConfigError, match=r"x\.yaml: missing key 'finetune'$"):
        parse_spec("name: a\ntrials: [1]\n", "x.yaml")


def test_pretraining_excludes_the_share_a_target_without_test_set_holds_out(
    tmp_path: Path,
) -> None:
    from matxfer.study.execute import _test_records
    from matxfer.training.config import TrainConfig
    from matxfer.training.inputs import prepare_splits

    folder = tmp_path / "notest"
    folder.mkdir()
    shutil.copy(DEMO_DIR / "ph" / "pool.json.gz", folder)
    spec = BASE.replace("targets: [demo-ph]", f"targets: [{folder}]").replace(
        "epochs: 2}", "epochs: 2, exclude_test_structures: true}"
    )
    spec += "test_fraction: 0.2\ntest_seed: 3\n"
    plan = plan_study(load_spec(write(tmp_path, spec)))
    pt = next(j for j in plan.jobs if j.kind == "pretrain")
    ft = next(j for j in plan.jobs if j.kind == "finetune")
    assert pt.settings["held_out"] == {"test_fraction": 0.2, "test_seed": 3}
    ft_config = TrainConfig.model_validate(ft.settings["config"])
    held_out_by_ft = prepare_splits(str(folder), ft_config, size=ft.settings["size"]).test
    excluded = _test_records(pt.settings["exclude_test_of"], None, pt.settings["held_out"])
    assert {r.id for r in excluded} == {r.id for r in held_out_by_ft}
    default_share = _test_records(pt.settings["exclude_test_of"], None)
    assert {r.id for r in default_share} != {r.id for r in held_out_by_ft}
