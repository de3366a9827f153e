"""Linear layers, the gated feed-forward block (SwiGLU when the activation is SiLU) and the plain two-layer one."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
}
"""The activations by the names Hugging Face configurations give them (``hidden_act``)."""


def activation(name: str):
    """The activation function a configuration names; a ValueError lists the known names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act={name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def linear(x: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
    """``x @ p["kernel"] (+ p["bias"])``: the kernel is stored (in, out), the bias optional."""
    y = jnp.matmul(x, p["kernel"])
    if "bias" in p:
        y = y + p["bias"]
    return y


def gated_mlp(x: jax.Array, p: Mapping[str, Mapping[str, jax.Array]], act: str = "silu") -> jax.Array:
    """``down(act(gate(x)) * up(x))``, the feed-forward block of Qwen2 and Llama (SwiGLU for ``act="silu"``)."""
    fn = activation(act)
    return linear(fn(linear(x, p["gate"])) * linear(x, p["up"]), p["down"])


def feed_forward(x: jax.Array, p: Mapping[str, Mapping[str, jax.Array]], act: str = "gelu") -> jax.Array:
    """``fc2(act(fc1(x)))``, the plain two-layer feed-forward block (the Qwen3-VL vision blocks' MLP)."""
    fn = activation(act)
    return linear(fn(linear(x, p["fc1"])), p["fc2"])
