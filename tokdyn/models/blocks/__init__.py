"""Transformer blocks that the language-model families share, one concept a module, pure functions over arrays.

- :mod:`~tokdyn.models.blocks.norm`       RMSNorm, computed in float32 and cast back
- :mod:`~tokdyn.models.blocks.mlp`        the gated (SwiGLU) feed-forward layer and a plain linear layer
- :mod:`~tokdyn.models.blocks.rotary`     rotary position embeddings: 1D, multimodal (M-RoPE) and axial 2D
- :mod:`~tokdyn.models.blocks.attention`  scaled dot-product attention with grouped key/value heads and masks
"""

from tokdyn.models.blocks import attention, mlp, norm, rotary

__all__ = ["attention", "mlp", "norm", "rotary"]
