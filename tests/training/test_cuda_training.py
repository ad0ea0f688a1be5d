"""Training takes the GPU by itself and its checkpoints serve the CPU (skipped without one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import synthetic_structures, tiny_config

from matxfer.training import load_predictor, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_default_accelerator_trains_on_the_gpu_and_predicts_on_either(
    tiny_data: Path, tmp_path: Path
) -> None:
    result = train(tiny_data, tmp_path / "gpu", config=tiny_config(), progress=False)
    info = json.loads((result.run_dir / "run_info.json").read_text())
    assert info["cpu_threads"] is None  # trained on the GPU
    assert "GPU" in (result.run_dir / "MODEL_CARD.md").read_text()

    structures = synthetic_structures(6, seed=99)
    on_cpu = load_predictor(result.run_dir, device="cpu").predict(structures)
    on_gpu = load_predictor(result.run_dir, device="cuda").predict(structures)
    assert np.allclose(on_cpu, on_gpu, atol=1e-4)
