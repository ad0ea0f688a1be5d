"""README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_readme_starts_with_two_commands() -> None:
    commands = _readme_commands()
    assert len(commands) >= 2
    main_job, tests = commands[0], commands[1]
    # Never a bare `pip install torch`: that pulls a multi-GB CUDA build.
    for command in (main_job, tests):
        assert command.startswith("pip install torch==2.13.0 && ")
    assert "matxfer " in main_job
    assert "pytest" in tests


def test_ci_runs_readme_test_command() -> None:
    tests = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.strip().splitlines()[-1] == tests


def test_ci_lints_before_the_tests() -> None:
    steps = [step.strip() for step in _readme_commands()[1].split("&&")]
    assert steps[-1] == "pytest"
    assert steps[-2] == "ruff check matxfer tests benchmarks scripts"


def test_ci_full_mode_runs_the_slow_tests_too() -> None:
    """`bash .ci/run --full` sets PYTEST_ADDOPTS so that the slow tests are collected."""
    import os
    import re
    import subprocess
    import sys

    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    found = re.search(r'PYTEST_ADDOPTS="\$\{PYTEST_ADDOPTS:-\} (.+)"', ci)
    assert found and '"${1:-}" = "--full"' in ci
    target = "tests/transfer/test_demo.py"
    env = {**os.environ, "PYTEST_ADDOPTS": found.group(1)}
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", target]
    full = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    default = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert "test_full_demo_fine_tuning_beats_scratch_at_100" in full.stdout
    assert "test_full_demo_fine_tuning_beats_scratch_at_100" not in default.stdout
