"""Regional compilation: ``torch.compile`` each transformer block instead of a whole model."""

from __future__ import annotations

import torch
from torch import nn

from openjepa.models.conditioner import CrossAttentionLayer
from openjepa.models.layers import Block


def compile_blocks(module: nn.Module) -> int:
    """``torch.compile`` every transformer block of ``module`` in place; returns how many were compiled.

    All blocks of one width share one compiled graph (parameters are graph inputs), so compiling takes
    seconds instead of tracing a 32-block encoder, and the state-dict keys do not change. Token counts
    vary from step to step (masks), so after the first recompile the graphs become shape-dynamic and
    stop recompiling. TC-JEPA's cross-attention layers are compiled too (their tensor function
    ``attend``): fusing the element-wise work on the N-caption tensors matters more there than the matmuls.
    """
    count = 0
    for m in module.modules():
        if isinstance(m, Block):
            m.compile()
            count += 1
        elif isinstance(m, CrossAttentionLayer):
            m.attend = torch.compile(m.attend)  # type: ignore[method-assign]
            count += 1
    return count
