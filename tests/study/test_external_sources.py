"""Pre-training entries that name an already pre-trained model (``from``) instead of a
pre-training: no PT job, fine-tunings that wait for nothing, ids that follow the model,
bad combinations refused, and one fine-tuning run end to end from a tiny trained run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from builders import TINY_MODEL
from tiny_data import subset

from matxfer.data.registry import DEMO_DIR
from matxfer.errors import ConfigError
from matxfer.study.cost import Calibration, simulate_wall
from matxfer.study.execute import run_job
from matxfer.study.executors import job_payload
from matxfer.study.jobs import plan_study
from matxfer.study.spec import load_spec, parse_spec
from matxfer.study.store import write_result
from matxfer.study.tables import build_tables

SPEC = """\
name: ext
profile: fast
pretrain:
  - {name: "NAME", from: "FROM"}
finetune:
  targets: [PH_DIR]
  sizes: [20]
  heads: [HEAD]
  epochs: 2
"""


def spec_text(source: str, name: str = "ext", head: str = "reuse", target: str = "demo-ph") -> str:
    text = SPEC.replace("NAME", name).replace("FROM", source).replace("HEAD", head)
    return text.replace("PH_DIR", target)


def write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch run of a tiny model on 24 demo formation energies (a real run
    directory: config, data record and best.ckpt)."""
    from matxfer.training.config import resolve_config
    from matxfer.training.run import train

    folder = tmp_path_factory.mktemp("external")
    data = subset(DEMO_DIR / "fe", folder / "fe", 24, 0)
    config = resolve_config("fast", {"model": TINY_MODEL, "epochs": 1, "batch_size": 8})
    train(data, folder / "fe-run", config=config, progress=False)
    return folder / "fe-run"


def test_from_source_has_no_pretraining_and_ids_follow_the_model(
    tiny_run: Path, tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    shutil.copytree(tiny_run, tmp_path / "models" / "fe-run")
    plan = plan_study(load_spec(write(tmp_path, spec_text("models/fe-run"))))
    assert plan.counts() == {"pretrain": 0, "scratch": 1, "finetune": 1}
    ft = next(j for j in plan.jobs if j.kind == "finetune")
    assert ft.depends_on is None and ft.pt_size is None and ft.source == "ext"
    # The relative path is resolved against the spec file, not the working directory.
    assert ft.settings["pretrained"] == str(tmp_path / "models" / "fe-run")
    assert len(ft.settings["pretrained_sha256"]) == 64 and "pt_job" not in ft.settings
    assert plan.dependants() == {}
    again = plan_study(load_spec(write(tmp_path, spec_text("models/fe-run"), "b.yaml")))
    assert [j.id for j in again.jobs] == [j.id for j in plan.jobs]
    # Another model (same weights, other place) is another job; scratch stays the same.
    other = plan_study(load_spec(write(tmp_path, spec_text(str(tiny_run)), "c.yaml")))
    assert {j.id for j in other.jobs} & {j.id for j in plan.jobs} == {plan.jobs[0].id}
    # Cost: no pre-training to wait for or to pay.
    seconds = {j.id: 5.0 for j in plan.jobs}
    assert simulate_wall(plan.jobs, seconds, 2) == pytest.approx(5.0)
    calibration = Calibration(0.01, 1e-4, 1e-3, 5.0, 4.0, "cpu", 1, "now", "key")
    scratch = plan.jobs[0]
    assert ft.records_read == scratch.records_read
    assert calibration.job_seconds(ft) == pytest.approx(calibration.job_seconds(scratch))


def test_target_placeholder_in_from_and_name(tiny_run: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_run, tmp_path / "fe-for-demo-ph")
    text = spec_text("fe-for-{target}", name="fe-{target}")
    spec = load_spec(write(tmp_path, text))
    assert spec.pretrain[0].from_ == str(tmp_path / "fe-for-{target}")
    # The copy a study directory keeps reads back the same (``study retry``).
    copy = yaml.safe_dump(spec.model_dump(mode="json"))
    assert "from: " in copy and "from_" not in copy
    assert parse_spec(copy).pretrain == spec.pretrain
    ft = next(j for j in plan_study(spec).jobs if j.kind == "finetune")
    assert ft.source == "fe-demo-ph"
    assert ft.settings["pretrained"] == str(tmp_path / "fe-for-demo-ph")


def test_a_missing_model_fails_at_plan_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, spec_text("no-such-model-{target}"))
    where = r"spec.yaml:4: pretrain\[0\]\.from: "
    with pytest.raises(ConfigError, match=where + ".*no-such-model-demo-ph"):
        plan_study(load_spec(path))


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("data: demo-fe", "data"),
        ("mpt: [demo-fe, demo-ph]", "mpt"),
        ("sizes: 100", "sizes"),
        ("seeds: [1]", "seeds"),
        ("epochs: 3", "epochs"),
        ("leave_one_out: true", "leave_one_out"),
        ("config: {lr: 0.01}", "config"),
    ],
)
def test_pretraining_keys_beside_from_are_refused(tmp_path: Path, extra: str, key: str) -> None:
    text = spec_text("chgnet", head="new").replace('"chgnet"}', f'"chgnet", {extra}}}')
    with pytest.raises(ConfigError) as error:
        plan_study(load_spec(write(tmp_path, text)))
    message = str(error.value)
    assert f"spec.yaml:4: pretrain[0].{key}: does not apply to a 'from' source" in message
    assert "takes only name, from" in message


def test_the_head_of_a_multi_output_model_is_not_reused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'ext' is a multi-property model.*energy_per_atom"):
        plan_study(load_spec(write(tmp_path, spec_text("chgnet"))))
    plan = plan_study(load_spec(write(tmp_path, spec_text("chgnet", head="new"), "b.yaml")))
    ft = next(j for j in plan.jobs if j.kind == "finetune")
    assert ft.settings["pretrained"] == "chgnet" and ft.settings["pretrained_sha256"] is None


def test_shipped_model_by_name(tmp_path: Path) -> None:
    from matxfer.training.shipped import shipped_models

    if "mpt7" not in shipped_models():
        pytest.skip("no shipped mpt7 model in this installation")
    with pytest.raises(ConfigError, match="multi-property model"):
        plan_study(load_spec(write(tmp_path, spec_text("mpt7"))))
    plan = plan_study(load_spec(write(tmp_path, spec_text("mpt7", head="new"), "b.yaml")))
    ft = next(j for j in plan.jobs if j.kind == "finetune")
    assert ft.settings["pretrained"] == "mpt7" and ft.depends_on is None


def test_fine_tuning_from_a_run_directory_end_to_end(tiny_run: Path, tmp_path: Path) -> None:
    ph = subset(DEMO_DIR / "ph", tmp_path / "ph", 24, 8)
    text = spec_text(str(tiny_run), target=str(ph)).replace("epochs: 2", "epochs: 1")
    text += "scratch: false\n"
    text += f"config: {{model: {json.dumps(TINY_MODEL)}, batch_size: 8}}\n"
    plan = plan_study(load_spec(write(tmp_path, text)))
    (job,) = plan.jobs
    study = tmp_path / "study"
    row = run_job(job_payload(job, study), study, None)
    assert row["status"] == "done", row["error"]
    assert row["source"] == "ext" and row["pt_job_id"] is None
    transfer = json.loads((Path(row["run_dir"]) / "transfer.json").read_text())
    assert transfer["pretrained"]["checkpoint"] == str((tiny_run / "best.ckpt").resolve())
    write_result(study, row)
    from matxfer.study.store import read_results

    summary = build_tables(read_results(study)).summary
    assert list(summary["label"]) == [f"ext → {ph} · all · reuse"]


@pytest.mark.slow
def test_accuracy_matrix_example_plans(shared_datasets: Path) -> None:
    from matxfer.training.shipped import shipped_models

    if not {"mpt7", "mpt7-no-ph", "mpt7-no-dc", "mpt7-no-ebg"} <= set(shipped_models()):
        pytest.skip("the shipped mpt7 models are not installed")
    examples = Path(__file__).resolve().parents[2] / "examples" / "studies"
    plan = plan_study(load_spec(examples / "accuracy_matrix.yaml"))
    assert plan.counts() == {"pretrain": 0, "scratch": 21, "finetune": 21}
    sources = {j.target: j.settings["pretrained"] for j in plan.jobs if j.kind == "finetune"}
    assert sources == {
        **{t: f"mpt7-no-{t}" for t in ("ph", "dc", "ebg")},
        **dict.fromkeys(("fe", "bg", "gv", "pz"), "mpt7"),
    }
