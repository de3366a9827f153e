"""The apply protocol (tokdyn.models.protocol.ApplyFn / Outputs) and its check
(tokdyn.diagnostics.protocol.check_apply): a researcher's own pure-JAX model with the documented
shapes runs every diagnostic end to end; a model of another layout, a position out of range, a
missing argument each get a named error before anything compiles; the library's Qwen2.5-VL adapter
passes with every keyword."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jax_compilations
from tokdyn.diagnostics import dmlr, grounding, protocol
from tokdyn.diagnostics import mediation
from tokdyn.models import protocol as model_protocol

COMPILE = "/jax/core/compile/backend_compile_duration"


class Toy:
    """A user's reasoner, written against the documented protocol only:
    [4 image patches | question | <s> | 2 latents | <e> | <answer>], two causal attention layers of
    two heads. Latent i is tanh(mean patch embedding @ W_i) (given ``latents`` replace them); the
    answer is read at the last position. ``layout`` breaks the output layout on purpose."""

    P, T, D, V, N, H = 4, 10, 8, 5, 2, 2
    patches, slots, markers, answer = (0, 1, 2, 3), (6, 7), (5, 8), 9

    def __init__(self, layout="ok"):
        self.layout = layout

    def init(self, key):
        k = jax.random.split(key, 7)
        d, n, h = self.D, self.N, self.H
        return {
            "colour": jax.random.normal(k[0], (3, d)),
            "pos": jax.random.normal(k[1], (self.T, d)),
            "tok": jax.random.normal(k[2], (self.V, d)),
            "lat": jax.random.normal(k[3], (2, d, d)) / np.sqrt(d),
            "qk": jax.random.normal(k[4], (n, h, d, d)) / d,
            "v": jax.random.normal(k[5], (n, h, d, d)) / d,
            "out": jax.random.normal(k[6], (d, self.V)),
        }

    def apply(self, params, batch, *, latents=None, intervene=None, drop=None):
        b = batch["image"].shape[0]
        patches = params["colour"][batch["image"]]  # (B, 4, D)
        text = params["tok"][
            jnp.stack(
                [
                    batch["question"],
                    jnp.full((b,), 1),
                    jnp.zeros((b,), int),
                    jnp.zeros((b,), int),
                    jnp.full((b,), 2),
                    jnp.full((b,), 3),
                ],
                1,
            )
        ]
        x = jnp.concatenate([patches, text], 1) + params["pos"][None]
        if latents is None:
            latents = jnp.tanh(jnp.einsum("bd,lde->ble", patches.mean(1), params["lat"]))
        x = x.at[:, jnp.asarray(self.slots)].set(latents)
        if intervene is not None and self.layout != "ignores_intervene":
            x = intervene(x)
        keep = jnp.ones((b, self.T), bool) if drop is None else ~drop
        mask = (jnp.tril(jnp.ones((self.T, self.T), bool))[None] & keep[:, None]) | jnp.eye(self.T, dtype=bool)
        hidden, attn, h = [x], [], x
        for i in range(self.N):
            s = jnp.einsum("bqd,hde,bke->bhqk", h, params["qk"][i], h)
            a = jax.nn.softmax(jnp.where(mask[:, None], s, -1e30), -1)  # (B, H, T, T)
            h = h + jnp.einsum("bhqk,bkd,hde->bqe", a, h, params["v"][i])
            hidden.append(h)
            attn.append(a)
        hidden, attn = jnp.stack(hidden, 1), jnp.stack(attn, 1)
        logits = h @ params["out"]
        if self.layout == "flat_hidden":
            hidden = hidden[:, -1]  # (B, T, D)
        if self.layout == "swapped_hidden":
            hidden = jnp.swapaxes(hidden, 1, 2)  # (B, T, N + 1, D)
        if self.layout == "no_heads":
            attn = attn.mean(2)  # (B, N, T, T)
        if self.layout == "tuple":
            return logits, hidden, attn, latents
        return model_protocol.Outputs(logits, hidden, attn, latents)


class NoDrop(Toy):
    def apply(self, params, batch, *, latents=None, intervene=None):
        return super().apply(params, batch, latents=latents, intervene=intervene)


def _batch(n, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"image": jax.random.randint(k1, (n, 4), 0, 3), "question": jax.random.randint(k2, (n,), 0, Toy.V)}


@pytest.fixture(scope="module")
def toy():
    m = Toy()
    params, batch = m.init(jax.random.key(0)), _batch(32)
    return m, params, batch


def test_apply_fn_is_a_documented_protocol():
    """The protocol is a type with every output's shape in one docstring, defined in the models' layer and
    imported by the diagnostics; a plain function with its signature is one."""
    assert protocol.Outputs is model_protocol.Outputs and protocol.ApplyFn is model_protocol.ApplyFn
    doc = " ".join(model_protocol.Outputs.__doc__.split())
    for text in (
        "logits: (B, T, V)",
        "hidden: (B, n_layers + 1, T, D)",
        "``hidden[:, 0]`` the input embeddings",
        "attention: (B, n_layers, H, T, T)",
        "latents: (B, L, D)",
    ):
        assert text in doc, text
    assert model_protocol.Outputs._fields == ("logits", "hidden", "attention", "latents")
    doc = model_protocol.ApplyFn.__doc__
    assert "intervene" in doc and "drop" in doc and "inject" in doc


@pytest.mark.full
def test_a_users_model_runs_every_diagnostic_end_to_end(toy):
    m, params, batch = toy
    out = m.apply(params, batch)
    with jax_compilations() as events:
        dims = protocol.check_apply(m.apply, params, batch, uses=("latents", "intervene", "drop"))
    assert COMPILE not in events  # an eval_shape: traced, never compiled
    assert dims == protocol.Dims(batch=32, length=10, vocab=5, layers=2, heads=2, width=8, latents=2)

    # decomposition: jitted with the positions static; "full" is the model's own answer
    answers = jnp.argmax(out.logits[:, m.answer], -1)
    fmt = params["pos"][jnp.asarray(m.markers + m.slots)]
    f = jax.jit(
        lambda k, p, b, a: mediation.decompose(
            k,
            m.apply,
            p,
            b,
            slots=m.slots,
            markers=m.markers,
            answer_position=m.answer,
            answers=a,
            length=m.T,
            format_embedding=fmt,
        )
    )
    got = np.asarray(f(jax.random.key(1), params, batch, answers))
    assert got.shape == (len(mediation.SETTINGS), 32) and set(np.unique(got)) <= {0.0, 1.0}
    assert got[mediation.SETTINGS.index("full")].mean() >= 0.95  # the same answers, up to last-bit ties

    # input -> latent: a batch against itself does not move; a blanked image moves the latents
    same = mediation.input_to_latent(m.apply, params, batch, batch, positions=m.patches, layer=1)
    np.testing.assert_allclose(same["latents"].cosine_distance, 0, atol=1e-6)
    assert same["states"].relative_l2.shape == (32, 4)
    blank = dict(batch, image=jnp.zeros_like(batch["image"]))
    moved = mediation.input_to_latent(m.apply, params, batch, blank)
    assert moved["latents"].cosine_distance.shape == (32, 2) and np.mean(moved["latents"].relative_l2) > 0
    noisy = mediation.input_to_latent(
        m.apply,
        params,
        batch,
        batch,
        positions=m.slots,
        intervene=mediation.noise_at(jax.random.key(2), m.patches, 1.0),
    )
    assert np.all(np.asarray(noisy["states"].relative_l2) > 0)

    # latent -> answer
    eff = mediation.latent_to_answer(
        jax.random.key(3),
        m.apply,
        params,
        batch,
        answer_position=m.answer,
        answers=answers,
        kinds=("zeros", "noise", "swap"),
    )
    assert eff.flipped.shape == (3, 32) and np.all(np.asarray(eff.changed).any(-1))
    np.testing.assert_array_equal(eff.correct_before, np.ones(32))

    # attention narrowness of the latents and the answer over the patches
    nar = mediation.narrowness(out.attention, queries=m.slots + (m.answer,), patches=m.patches, top_k=2)
    ent = np.asarray(nar.entropy)
    assert ent.shape == (32, 3) and np.all((ent >= 0) & (ent <= np.log(4) + 1e-5))
    assert np.all((np.asarray(nar.patch_share) > 0) & (np.asarray(nar.patch_share) <= 1 + 1e-6))

    # grounding and the latent optimiser take it as well
    s = grounding.scores(m.apply, params, batch, blank, positions=[m.answer], tokens=answers[:, None])
    assert s.shape == (32, 1)
    res = dmlr.optimise(
        jax.random.key(4),
        m.apply,
        params,
        jax.tree.map(lambda a: a[:4], batch),
        dmlr.Config(top_k=3, n_iters=2, n_pairs=2),
        latent_positions=m.slots,
        answer_position=m.answer,
        chunk=None,
    )
    assert res.latents_best.shape == (4, 2, 8)


@pytest.mark.full
def test_narrowness_is_nan_where_a_query_attends_to_no_patch(toy):
    att = np.zeros((2, 1, 1, 6, 6), np.float32)
    att[:, :, :, 4, :4] = [0.5, 0.25, 0.25, 0.0]  # all of position 4's attention on the patches
    att[:, :, :, 5, 5] = 1.0  # position 5 attends to itself only: no patch
    nar = mediation.narrowness(jnp.asarray(att), queries=(4, 5), patches=(0, 1, 2, 3), top_k=1)
    np.testing.assert_allclose(nar.entropy[:, 0], -(0.5 * np.log(0.5) + 0.5 * np.log(0.25)), rtol=1e-6)
    np.testing.assert_allclose(nar.top_k_mass[:, 0], 0.5)
    assert np.all(np.isnan(np.asarray(nar.entropy[:, 1]))) and np.all(np.isnan(np.asarray(nar.top_k_mass[:, 1])))
    np.testing.assert_array_equal(nar.patch_share[:, 1], 0.0)
    # the user's model with its patches dropped: no query past them sees a patch
    m, params, batch = toy
    drop = jnp.zeros((32, m.T), bool).at[:, :4].set(True)
    out = m.apply(params, batch, drop=drop)
    nar = mediation.narrowness(out.attention, queries=m.slots + (m.answer,), patches=m.patches)
    assert np.all(np.isnan(np.asarray(nar.entropy))) and np.all(np.asarray(nar.patch_share) == 0)


def _cases(params, batch):
    """(call, error type, message) of a wrong layout, a position out of range, a missing argument."""
    answers, fmt, key = jnp.zeros(32, int), jnp.zeros((4, Toy.D)), jax.random.key(0)
    tokens, att, five = answers[:, None], jnp.zeros((1, 1, 1, 10, 10)), jax.tree.map(lambda a: a[:5], batch)

    def decompose(m, **kw):
        args = dict(
            slots=Toy.slots,
            markers=Toy.markers,
            answer_position=Toy.answer,
            answers=answers,
            length=Toy.T,
            format_embedding=fmt,
        )
        return lambda: mediation.decompose(key, m.apply, params, batch, **{**args, **kw})

    def jitted(m, **kw):
        return lambda: jax.jit(
            lambda p, b: mediation.decompose(
                key,
                m.apply,
                p,
                b,
                slots=Toy.slots,
                markers=Toy.markers,
                answer_position=Toy.answer,
                answers=answers,
                length=Toy.T,
                **kw,
            )
        )(params, batch)

    hidden = r"hidden must be \(B, n_layers \+ 1, T, D\)"
    return [
        # the output layout
        (
            lambda: mediation.input_to_latent(Toy("flat_hidden").apply, params, batch, batch, positions=(0, 1)),
            ValueError,
            hidden,
        ),
        (decompose(Toy("swapped_hidden")), ValueError, hidden),
        (jitted(Toy("swapped_hidden"), format_embedding=fmt), ValueError, hidden),
        (decompose(Toy("no_heads")), ValueError, r"attention must be \(B, n_layers, H, T, T\)"),
        (decompose(Toy("tuple")), TypeError, r"must return Outputs\(logits, hidden, attention, latents\)"),
        (decompose(Toy("ignores_intervene")), ValueError, "apply_fn must call intervene on the input embeddings"),
        (decompose(NoDrop()), TypeError, "apply_fn must take drop="),
        (
            lambda: mediation.latent_to_answer(
                key, Toy("flat_hidden").apply, params, batch, answer_position=9, kinds=("zeros",)
            ),
            ValueError,
            hidden,
        ),
        (
            lambda: grounding.scores(Toy("no_heads").apply, params, batch, batch, positions=[9], tokens=tokens),
            ValueError,
            "attention must be",
        ),
        (
            lambda: dmlr.optimise(
                key, Toy("swapped_hidden").apply, params, batch, latent_positions=Toy.slots, answer_position=9
            ),
            ValueError,
            hidden,
        ),
        # positions out of range
        (decompose(Toy(), answer_position=10), ValueError, r"answer_position must name positions in \[0, 10\)"),
        (decompose(Toy(), length=11), ValueError, "length must be the model's sequence length T = 10"),
        (
            lambda: mediation.latent_to_answer(key, Toy().apply, params, batch, answer_position=-1, kinds=("zeros",)),
            ValueError,
            r"answer_position must name positions in \[0, 10\)",
        ),
        (
            lambda: mediation.input_to_latent(Toy().apply, params, batch, batch, positions=(3, 10)),
            ValueError,
            r"positions must name positions in \[0, 10\)",
        ),
        (
            lambda: mediation.input_to_latent(Toy().apply, params, batch, batch, layer=3),
            ValueError,
            r"layer must be an int in \[-3, 3\)",
        ),
        (
            lambda: mediation.narrowness(att, queries=(10,), patches=(0, 1)),
            ValueError,
            r"queries must name positions in \[0, 10\)",
        ),
        (
            lambda: grounding.token_logprobs(Toy().apply, params, batch, positions=[12], tokens=tokens),
            ValueError,
            r"positions must name positions in \[0, 10\)",
        ),
        (
            lambda: dmlr.optimise(key, Toy().apply, params, batch, latent_positions=(6, 10), answer_position=9),
            ValueError,
            r"latent_positions must name positions in \[0, 10\)",
        ),
        # missing or misshapen arguments
        (decompose(Toy(), format_embedding=None), ValueError, "format_embedding must have 4 rows"),
        (jitted(Toy()), ValueError, "format_embedding must have 4 rows"),
        (
            decompose(Toy(), format_embedding=jnp.zeros((4, 3))),
            ValueError,
            r"format_embedding must have shape \(4, D=8\)",
        ),
        (decompose(Toy(), answers=jnp.zeros(5, int)), ValueError, r"answers must have shape \(B=32,\)"),
        (
            lambda: mediation.latent_effects(key, Toy().apply, params, batch, answer_position=9, kinds=("other",)),
            ValueError,
            r"other must be given, an array of shape \(B=32, L=2, D=8\)",
        ),
        (
            lambda: mediation.input_to_latent(Toy().apply, params, batch, five),
            ValueError,
            "perturbed must have batch's structure and shapes",
        ),
        (
            lambda: grounding.token_logprobs(Toy().apply, params, batch, positions=[9], tokens=np.full((32, 1), 7)),
            ValueError,
            r"tokens must be in \[0, 4\]",
        ),
    ]


def test_bad_models_and_arguments_are_named_before_anything_compiles(toy):
    _, params, batch = toy
    cases = _cases(params, batch)
    with jax_compilations() as events:
        for call, error, match in cases:
            with pytest.raises(error, match=match):
                call()
    assert COMPILE not in events


def test_a_model_without_latents_is_refused_by_the_latent_diagnostics(toy):
    m, params, batch = toy

    def no_latents(p, b, *, latents=None, intervene=None):
        out = m.apply(p, b, intervene=intervene)
        return out._replace(latents=jnp.zeros((b["image"].shape[0], 0, m.D)))

    with jax_compilations() as events:
        with pytest.raises(ValueError, match=r"latents must be \(B, L, D\) with L >= 1 for latent interventions"):
            mediation.latent_to_answer(
                jax.random.key(0), no_latents, params, batch, answer_position=m.answer, kinds=("zeros", "swap")
            )
        with pytest.raises(ValueError, match="L >= 1 for the latent optimiser"):
            dmlr.optimise(
                jax.random.key(0), no_latents, params, batch, latent_positions=m.slots, answer_position=m.answer
            )
    assert COMPILE not in events
    shifts = mediation.input_to_latent(no_latents, params, batch, batch)  # shifts of no latents: allowed
    assert shifts["latents"].relative_l2.shape == (32, 0)


def test_the_check_traces_a_model_once_per_shape(toy):
    """Repeated eager calls reuse the model's trace; new shapes trace it again."""
    m, params, batch = toy
    calls = []

    def counted(p, b, **kw):
        calls.append(1)
        return m.apply(p, b, **kw)

    for _ in range(3):
        protocol.check_apply(counted, params, batch, uses=("latents",))
    assert len(calls) == 2  # one eval_shape: the plain call and the latents= call
    protocol.check_apply(counted, params, jax.tree.map(lambda a: a[:5], batch), uses=("latents",))
    assert len(calls) == 4


@pytest.mark.parametrize("block", [True, False], ids=["latent-block", "no-block"])
def test_the_librarys_model_implements_the_protocol(block):
    """The Qwen2.5-VL adapter (tokdyn.models.qwen2_5_vl.adapter.make_apply, on the tiny checkpoint's
    configuration) against its documented layout, abstractly (no compile): every keyword, with a latent
    block of 3 slots and without one (no latents)."""
    pytest.importorskip("safetensors")
    from pathlib import Path

    from tokdyn.models import qwen2_5_vl
    from tokdyn.models.qwen2_5_vl import adapter as qa

    fixture = Path(__file__).parent / "fixtures" / "qwen2_5_vl_tiny"
    model = qwen2_5_vl.load(fixture, dtype="float32")
    cfg, grid = model.config, np.array([[1, 4, 6]])  # 6 image tokens
    start, end, fill = (100, 101, 102) if block else (None, None, None)
    row = qa.prompt([1, 5, 118, *[cfg.image_token_id] * 6, 119, 40], [41, 42, 9], 3 if block else 0, start, end, fill)
    ids = np.stack([row, row, row])
    lay = qa.layout(cfg, ids, start, end)
    assert len(lay.latents) == (3 if block else 0) and len(lay.image) == 6
    pixels = np.zeros((3, int(grid.prod()), cfg.vision.patch_dim), np.float32)
    spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype)  # noqa: E731
    params = jax.tree.map(spec, model.params)
    batch = jax.tree.map(spec, qa.make_batch(cfg, ids, pixels, grid))
    apply = qa.make_apply(cfg, grid, lay)
    uses = ("intervene", "drop", ("inject",)) + (("latents", ("latents", "inject")) if block else ())
    with jax_compilations() as events:
        dims = protocol.check_apply(apply, params, batch, uses=uses, n_inject=len(lay.image))
    assert COMPILE not in events
    assert dims == protocol.Dims(
        batch=3,
        length=lay.length,
        vocab=cfg.text.vocab_size,
        layers=cfg.text.num_hidden_layers,
        heads=cfg.text.num_attention_heads,
        width=cfg.text.hidden_size,
        latents=len(lay.latents),
    )
