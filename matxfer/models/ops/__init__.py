"""The speed code under ALIGNN's layers: same arithmetic as the plain torch formulas, fewer passes.

* :mod:`~matxfer.models.ops.fused_ops`: dense layers with the add fused into the BLAS call,
  scatter sums;
* :mod:`~matxfer.models.ops.block_norm`: BatchNorm + SiLU over row blocks, so the wide
  ``[E, 256]`` edge activations are never stored whole;
* :mod:`~matxfer.models.ops.gated_edges`: the edge-gated update as one custom autograd function;
* :mod:`~matxfer.models.ops.kernels`: the C kernels (``csrc/gated_edges.c``) behind the two above,
  compiled on first use and skipped cleanly without a compiler.

Kept apart from :mod:`matxfer.models` so that package reads as the model; the layers there
call into this one, never the other way round.
"""
