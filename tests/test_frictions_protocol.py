"""The diagnostics' protocol check reads what ``hidden`` holds, not only its shape: a user's own
tiny transformer (plain JAX) whose ``apply`` returns the documented fields is accepted; one whose
``hidden`` has the right shape but holds block outputs and the final LayerNorm state where the input
embeddings belong is refused naming ``hidden`` and the embeddings (eagerly and inside ``jit``); one
whose ``hidden`` lacks the embeddings' entry is blamed on ``hidden``, not ``attention``. The probe
runs once per model and shapes; the library's Qwen2.5-VL adapter passes it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokdyn.diagnostics import protocol
from tokdyn.diagnostics import mediation
from tokdyn.models.protocol import Outputs


def _layer_norm(x):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)


class Transformer:
    """A user's model: [4 input tokens | <s> | 2 latent slots | <e> | <answer>], pre-LN blocks of
    causal attention (2 heads) and an MLP, a final LayerNorm and a read-out. Latent i is
    tanh(mean input embedding @ W_i). ``hidden`` says what its ``apply`` returns as ``hidden``:
    "embeddings" (the protocol: the input embeddings, then each block's output), "blocks_and_final_ln"
    (each block's output, then the final LayerNorm state: the right shape), "blocks" (each block's
    output only) or "blocks_and_embeddings_before_intervene"."""

    T, D, V, N, H = 9, 8, 6, 2, 2
    slots, markers, answer = (5, 6), (4, 7), 8

    def __init__(self, hidden="embeddings"):
        self.hidden = hidden

    def init(self, key):
        k = jax.random.split(key, 6)
        d, n = self.D, self.N
        return {
            "tok": jax.random.normal(k[0], (self.V, d)),
            "pos": 0.1 * jax.random.normal(k[1], (self.T, d)),
            "lat": jax.random.normal(k[2], (2, d, d)) / np.sqrt(d),
            "qkv": jax.random.normal(k[3], (n, 3, d, d)) / np.sqrt(d),
            "mlp": jax.random.normal(k[4], (n, 2, d, d)) / np.sqrt(d),
            "out": jax.random.normal(k[5], (d, self.V)),
        }

    def apply(self, params, batch, *, latents=None, intervene=None):
        tokens = batch["tokens"]  # (B, 4)
        b, d, h = tokens.shape[0], self.D, self.H
        fixed = jnp.broadcast_to(jnp.asarray([1, 0, 0, 2, 3]), (b, 5))  # <s> slot slot <e> <answer>
        x = params["tok"][jnp.concatenate([tokens, fixed], 1)] + params["pos"]  # (B, T, D)
        if latents is None:
            latents = jnp.tanh(jnp.einsum("bd,lde->ble", x[:, :4].mean(1), params["lat"]))  # (B, 2, D)
        x = x.at[:, jnp.asarray(self.slots)].set(latents)
        given = x
        if intervene is not None:
            x = intervene(x)
        embedded = x  # (B, T, D) what the blocks read
        causal = jnp.tril(jnp.ones((self.T, self.T), bool))
        states, attns = [], []
        for i in range(self.N):
            q, k, v = (
                jnp.einsum("btd,de->bte", _layer_norm(x), params["qkv"][i, j]).reshape(b, self.T, h, d // h)
                for j in range(3)
            )
            s = jnp.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(d // h)
            a = jax.nn.softmax(jnp.where(causal, s, -1e30), -1)  # (B, H, T, T)
            x = x + jnp.einsum("bhqk,bkhe->bqhe", a, v).reshape(b, self.T, d)
            x = x + jax.nn.gelu(_layer_norm(x) @ params["mlp"][i, 0]) @ params["mlp"][i, 1]
            states.append(x)
            attns.append(a)
        final = _layer_norm(x)
        entries = {
            "embeddings": [embedded] + states,
            "blocks_and_final_ln": states + [final],
            "blocks": states,
            "blocks_and_embeddings_before_intervene": [given] + states,
        }[self.hidden]
        return Outputs(final @ params["out"], jnp.stack(entries, 1), jnp.stack(attns, 1), latents)


def _setup(hidden="embeddings", n=16):
    m = Transformer(hidden)
    params = m.init(jax.random.key(0))
    batch = {"tokens": jax.random.randint(jax.random.key(1), (n, 4), 0, Transformer.V)}
    return m, params, batch


def _decompose(m, params, batch, jit=False):
    answers = jnp.zeros(batch["tokens"].shape[0], int)
    f = lambda p, b: mediation.decompose(
        jax.random.key(2),
        m.apply,
        p,
        b,
        slots=m.slots,
        markers=m.markers,  # noqa: E731
        answer_position=m.answer,
        answers=answers,
        length=m.T,
        settings=("full", "slots_zeros", "slots_mean"),
    )
    return (jax.jit(f) if jit else f)(params, batch)


@pytest.mark.full
def test_a_users_transformer_with_the_documented_fields_is_accepted():
    m, params, batch = _setup()
    dims = protocol.check_apply(m.apply, params, batch, reads_hidden=True)
    assert dims == protocol.Dims(batch=16, length=9, vocab=6, layers=2, heads=2, width=8, latents=2)
    assert _decompose(m, params, batch).shape == (3, 16)
    assert _decompose(m, params, batch, jit=True).shape == (3, 16)
    moved = mediation.input_to_latent(
        m.apply,
        params,
        batch,
        batch,
        positions=m.slots,
        layer=0,
        intervene=mediation.noise_at(jax.random.key(3), m.slots, 1.0),
    )
    assert np.all(np.asarray(moved["states"].relative_l2) > 0)


@pytest.mark.parametrize("jit", [False, True])
def test_block_outputs_and_the_final_layernorm_in_place_of_the_embeddings_are_refused(jit):
    """The right shape (B, n_layers + 1, T, D), the wrong contents: refused, naming hidden[:, 0] and
    the input embeddings, before any diagnostic runs (inside jit: on stand-in values)."""
    m, params, batch = _setup("blocks_and_final_ln")
    out = m.apply(params, batch)
    assert out.hidden.shape == (16, m.N + 1, m.T, m.D)  # the shape check alone would pass it
    match = r"hidden must hold the input embeddings at hidden\[:, 0\] .*no entry of hidden holds them"
    with pytest.raises(ValueError, match=match) as e:
        _decompose(m, params, batch, jit=jit)
    assert ("stand-in values" in str(e.value)) == jit
    with pytest.raises(ValueError, match=match):
        mediation.input_to_latent(m.apply, params, batch, batch, positions=m.slots)
    with pytest.raises(ValueError, match=r"hidden\[:, 0\] holds the embeddings intervene was given, not those it"):
        mediation.input_to_latent(
            Transformer("blocks_and_embeddings_before_intervene").apply, params, batch, batch, positions=m.slots
        )


def test_a_hidden_without_the_embeddings_entry_is_blamed_on_hidden_not_attention():
    m, params, batch = _setup("blocks")
    for call in (
        lambda: _decompose(m, params, batch),
        lambda: mediation.input_to_latent(m.apply, params, batch, batch),
        lambda: protocol.check_apply(m.apply, params, batch),
    ):
        with pytest.raises(ValueError) as e:
            call()
        text = str(e.value)
        assert text.startswith(
            "apply_fn(params, batch).hidden must be (B, n_layers + 1, T, D) = (16, n_layers + 1 = 3"
            ", 9, D): hidden[:, 0] the input embeddings"
        ), text
        assert "got shape (16, 2, 9, 8)" in text and "n_layers = 2 from attention (16, 2, 2, 9, 9)" in text
        assert "attention must be" not in text


def test_the_probe_runs_once_per_model_and_shapes():
    m, params, batch = _setup()
    calls = []

    def counted(p, b, **kw):
        calls.append(sorted(kw))
        return m.apply(p, b, **kw)

    protocol.check_apply(counted, params, batch, reads_hidden=True)
    # the shape check's plain and intervene= calls, then the probe's one intervene= call
    assert calls == [[], ["intervene"], ["intervene"]]
    for _ in range(3):
        protocol.check_apply(counted, params, batch, reads_hidden=True)
    assert len(calls) == 3  # cached: the model is neither traced nor probed again


def test_traced_weights_of_a_large_model_are_checked_by_shapes_not_probed_on_stand_ins(monkeypatch):
    # a real checkpoint's weights traced inside a diagnostic's jit: no host copy of stand-in weights, no compile
    m, params, batch = _setup("blocks_and_final_ln")  # a model the probe refuses when it runs
    calls = []

    def counted(p, b, **kw):
        calls.append(sorted(kw))
        return m.apply(p, b, **kw)

    monkeypatch.setattr(protocol, "PROBE_STAND_IN_LIMIT", 10)  # these weights are "large"
    jax.jit(lambda p, b: protocol.check_apply(counted, p, b, reads_hidden=True).batch)(params, batch)
    assert calls == [[], ["intervene"]]  # the shape check's two calls; no probe on stand-ins
    with pytest.raises(ValueError, match=r"hidden must hold the input embeddings"):  # concrete: probed in full
        protocol.check_apply(m.apply, params, batch, reads_hidden=True)


def test_a_model_that_does_not_take_intervene_is_named_for_the_diagnostics_that_read_hidden():
    m, params, batch = _setup()

    def no_intervene(p, b, *, latents=None):
        return m.apply(p, b, latents=latents)

    with pytest.raises(TypeError, match="apply_fn must take intervene="):
        mediation.input_to_latent(no_intervene, params, batch, batch, positions=m.slots)
    assert mediation.input_to_latent(no_intervene, params, batch, batch)["latents"].relative_l2.shape == (16, 2)


@pytest.mark.full
@pytest.mark.parametrize("block", [True, False], ids=["latent-block", "no-block"])
def test_the_librarys_adapter_passes_the_probe(block):
    """The Qwen2.5-VL adapter (tokdyn.models.qwen2_5_vl.adapter.make_apply) on the tiny checkpoint, with a
    latent block and without one: its hidden[:, 0] holds the input embeddings, on its weights and inside jit (on
    stand-ins), and the same adapter with a block's output in that place is refused both ways."""
    pytest.importorskip("safetensors")
    from pathlib import Path

    from tokdyn.models import qwen2_5_vl
    from tokdyn.models.qwen2_5_vl import adapter as qa

    model = qwen2_5_vl.load(Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny", dtype="float32")
    cfg, grid = model.config, np.array([[1, 4, 4]])  # 4 image tokens
    start, end, fill = (100, 101, 102) if block else (None, None, None)
    row = qa.prompt([1, 5, 118, *[cfg.image_token_id] * 4, 119, 40], [41, 42, 9], 2 if block else 0, start, end, fill)
    ids = np.stack([row] * 5)
    pixels = np.random.default_rng(0).standard_normal((5, int(grid.prod()), cfg.vision.patch_dim)).astype(np.float32)
    lay = qa.layout(cfg, ids, start, end)
    apply = qa.make_apply(cfg, grid, lay)
    five = qa.make_batch(cfg, ids, pixels, grid)
    batch = jax.tree.map(lambda a: a[:4], five)
    dims = protocol.check_apply(apply, model.params, batch, uses=("intervene",), reads_hidden=True)
    assert dims.layers == 2 and dims.length == lay.length and dims.latents == len(lay.latents)
    # new shapes: probed again, on stand-ins inside jit
    jax.jit(lambda p, b: protocol.check_apply(apply, p, b, reads_hidden=True).batch)(model.params, five)

    def shifted(p, b, **kw):  # the first block's output where the embeddings belong: the probe refuses it
        out = apply(p, b, **kw)
        return out._replace(hidden=out.hidden.at[:, 0].set(out.hidden[:, 1]))

    match = r"hidden must hold the input embeddings at hidden\[:, 0\]"
    with pytest.raises(ValueError, match=match):
        protocol.check_apply(shifted, model.params, batch, reads_hidden=True)
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda p, b: protocol.check_apply(shifted, p, b, reads_hidden=True).batch)(model.params, five)
