"""The model on a CUDA GPU computes what it computes on the CPU (skipped without a GPU).

On the CPU the per-edge gates run through the blocked custom-autograd kernels; on a
GPU, plain autograd. Both must give the same predictions and gradients.
"""

from __future__ import annotations

import pytest
import torch
from model_graphs import random_graph
from torch_geometric.data import Batch

from matxfer.models import ALIGNN

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_study_sized_model_on_gpu_matches_cpu(norm: str) -> None:
    batch = Batch.from_data_list([random_graph(n, 6 * n, seed=n) for n in (8, 12, 20)])
    torch.manual_seed(0)
    cpu_model = ALIGNN(norm=norm)  # the study's 4 + 4 layers, hidden 256
    gpu_model = ALIGNN(norm=norm).cuda()
    gpu_model.load_state_dict(cpu_model.state_dict())

    cpu_out = cpu_model(batch)
    gpu_out = gpu_model(batch.cuda())
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-4, atol=1e-4)

    cpu_out.square().sum().backward()
    gpu_out.square().sum().backward()
    gpu_grads = dict(gpu_model.named_parameters())
    for name, param in cpu_model.named_parameters():
        if param.grad is None:  # the last layers' unused edge norms, as in the reference
            assert gpu_grads[name].grad is None, name
            continue
        scale = param.grad.abs().max().clamp_min(1e-6)
        error = (gpu_grads[name].grad.cpu() - param.grad).abs().max() / scale
        assert error < 1e-3, (name, float(error))
