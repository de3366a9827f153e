"""Transformer blocks that the language-model families share, one concept a module, pure functions over arrays.

- :mod:`~tokdyn.models.blocks.norm`       RMSNorm, computed in float32 and cast back; LayerNorm
- :mod:`~tokdyn.models.blocks.mlp`        the gated (SwiGLU) and the plain feed-forward layers, a linear layer
- :mod:`~tokdyn.models.blocks.rotary`     rotary position embeddings: 1D, multimodal (M-RoPE, in sections or
  interleaved) and axial 2D
- :mod:`~tokdyn.models.blocks.attention`  scaled dot-product attention with grouped key/value heads and masks, and
  attention within segments of a packed sequence
- :mod:`~tokdyn.models.blocks.fields`     a checkpoint's configuration fields, checked and named
- :mod:`~tokdyn.models.blocks.weights`    safetensors headers checked, tensors mapped onto a parameter tree
- :mod:`~tokdyn.models.blocks.images`     the Qwen-VL image processor's pixels (resize, rescale, normalise, patches)
"""

from tokdyn.models.blocks import attention, fields, images, mlp, norm, rotary, weights

__all__ = ["attention", "fields", "images", "mlp", "norm", "rotary", "weights"]
