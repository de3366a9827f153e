"""Training the latent reasoner through :mod:`tokdyn.train`: what the model supplies.

- :func:`trainer`: variant ``name``'s :class:`tokdyn.train.Curriculum`, one
  :class:`tokdyn.train.Trainer` per curriculum stage (one stage without a curriculum): the
  parameters of the stage-0 model, the objective of :func:`tokdyn.models.latent.losses.objective`
  on a batch whose replaced caption tokens are masked, batches drawn with replacement from the
  training pool (:func:`draw_batch`).
- the optimiser is the configuration's ``train`` (:class:`tokdyn.train.optim.Config`; by default
  gradients clipped to global norm 1, then AdamW with a linear warm-up to the (traced) peak
  learning rate and a cosine decay to 5% of it).
- :func:`models`: the keys and hyper-parameters of every seed x setting; :func:`data`: the
  training pool, validation and test sets; :func:`stamp`: what a checkpoint is keyed on.
- :class:`VariantConfig`: a variant and its training configuration as one static value, trained by
  :func:`variant_trainer`.

Every seed's run has key ``fold_in(fold_in(key(root_seed), 1), seed)``: it draws the initial
parameters (``fold_in(run key, 0)``) and the batch of step t (``fold_in(run key, t)``, with
replacement from a training pool shared by every model; the test set never shares an instance
with it, see :func:`tokdyn.data.grid_tasks.splits`). All settings of a sweep share their seeds'
initial parameters and batches. Train with :func:`tokdyn.train.train_many`::

    keys, hp = training.models(cfg, Hparams(learning_rate=jnp.array([1e-3, 3e-3])))
    result = train.train_many(training.trainer(cfg, "direct"), training.data(cfg).train, keys, hp)
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp

from tokdyn import io, train
from tokdyn.data import grid_tasks as tasks
from tokdyn.models.latent import losses, variants
from tokdyn.models.latent import model as latent_model
from tokdyn.models.latent.config import Config, Hparams


def draw_batch(key, pool, batch_size: int):
    """``batch_size`` instances drawn uniformly with replacement from ``pool`` (leading axis N)."""
    idx = jax.random.randint(key, (batch_size,), 0, pool.answer.shape[0])
    return jax.tree.map(lambda a: a[idx], pool)


def run_keys(key):
    """``(key of the initial parameters, run key)`` of a seed's key: ``(fold_in(key, 0), key)``."""
    return jax.random.fold_in(key, 0), key


def _stage_trainer(cfg: Config, name: str, stage: int) -> train.Trainer:
    v = variants.variant(name)
    model = latent_model.Model(variants.model_config(cfg, name, stage))
    first = latent_model.Model(variants.model_config(cfg, name, 0))
    dropped = variants.dropped_captions(cfg, name, stage)
    pad = cfg.task.vocab.pad

    def loss(params, batch, key, hp):
        cap_mask = (jnp.arange(model.cfg.caption_len) >= dropped).astype(jnp.float32)  # (K,)
        return losses.objective(
            model,
            params,
            variants.stage_batch(batch, dropped, pad),
            align=v.align,
            caption_mask=cap_mask,
            align_weight=hp.align_weight,
            caption_weight=hp.caption_weight,
        )

    return train.Trainer(
        cfg.train,
        init=lambda key, hp: first.init(key),
        loss=loss,
        batch=lambda key, pool, step: draw_batch(key, pool, cfg.batch_size),
        keys=run_keys,
        name=name,
    )


def trainer(cfg: Config, name: str) -> train.Curriculum:
    """Variant ``name``'s training: a :class:`tokdyn.train.Curriculum` of its stages
    (:func:`tokdyn.models.latent.variants.stages`), the same object for the same arguments (so its
    compilation is reused)."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a tokdyn.models.latent.config.Config, got {type(cfg).__name__}")
    cfg.validate()
    variants.variant(name)
    return _curriculum(cfg, name)


@dataclasses.dataclass(frozen=True)
class VariantConfig:
    """One variant's training as one static value: the variant's name and the training
    configuration, what :func:`variant_trainer` trains (a learned sweep of the reasoner's knobs x
    seeds takes it as its model's configuration: ``tokdyn sweep latent-reasoning``).

    Attributes:
      variant: the training variant, a name from tokdyn.models.latent.variants.VARIANTS.
      training: the static training configuration (tasks, model size, step budget, pools, seeds).
    """

    variant: str = "latent"
    training: Config = Config()

    @property
    def train(self):
        """The optimiser's budget and schedule: ``training.train`` (a :class:`tokdyn.train.optim.Config`)."""
        return self.training.train

    def validate(self) -> "VariantConfig":
        """Check the variant's name and the training configuration; raise ``ValueError`` /
        ``TypeError`` naming the field. Returns ``self``."""
        variants.variant(self.variant)
        if not isinstance(self.training, Config):
            raise TypeError(
                f"training must be a tokdyn.models.latent.config.Config, got {type(self.training).__name__}"
            )
        self.training.validate()
        return self


def variant_trainer(vc: VariantConfig) -> train.Curriculum:
    """:func:`trainer` of ``vc.training`` and ``vc.variant``: the variant's
    :class:`tokdyn.train.Curriculum` (the same object for equal values)."""
    return trainer(vc.training, vc.variant)


@functools.lru_cache(maxsize=64)
def _curriculum(cfg: Config, name: str) -> train.Curriculum:
    return train.Curriculum(
        tuple((n, _stage_trainer(cfg, name, i)) for i, (_, _, n) in enumerate(variants.stages(cfg, name)))
    )


def seed_keys(cfg: Config):
    """(seeds,) run keys ``fold_in(fold_in(key(root_seed), 1), seed)``."""
    root = jax.random.key(cfg.root_seed)
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(root, 1), s) for s in range(cfg.seeds)])


def models(cfg: Config, hparams: Hparams | None = None):
    """``(keys, hparams)`` of every seed x setting of ``hparams`` (each field a scalar or an (H,)
    array; default :class:`Hparams`): M = H x seeds models, model ``h * seeds + s``."""
    hparams = Hparams() if hparams is None else hparams
    if not isinstance(hparams, Hparams):
        raise TypeError(f"hparams must be a tokdyn.models.latent.config.Hparams, got {type(hparams).__name__}")
    hparams.validate()
    return train.grid(seed_keys(cfg), hparams)


def stamp(cfg: Config, name: str) -> str:
    """What a checkpoint of variant ``name`` under ``cfg`` is keyed on."""
    return json.dumps({"variant": name, "config": io.jsonable(dataclasses.asdict(cfg))}, sort_keys=True)


def init_states(cfg: Config, name: str, hparams: Hparams | None = None) -> train.TrainState:
    """The initial states of every model of :func:`models` (e.g. the ``like`` of
    :func:`tokdyn.train.load_checkpoint`)."""
    return train.init_states(trainer(cfg, name), *models(cfg, hparams))[0]


def load(path: str, cfg: Config, name: str, hparams: Hparams | None = None) -> train.TrainState:
    """The state of variant ``name`` saved at ``path`` by :func:`tokdyn.train.train_many`. A host
    function (reads a file).

    Args:
      path: the checkpoint's path.
      cfg: the training :class:`~tokdyn.models.latent.config.Config` it was trained with.
      name: the variant's name (:mod:`tokdyn.models.latent.variants`).
      hparams: the :class:`~tokdyn.models.latent.config.Hparams` of its settings (default: the
        defaults), which set the number of models M (:func:`models`).

    Returns:
      The stacked :class:`tokdyn.train.TrainState` of the M models.

    Raises:
      ValueError: a checkpoint of other models, settings or another variant.
    """
    return train.load_checkpoint(path, init_states(cfg, name, hparams), stamp(cfg, name))[0]


def load_best(path: str, cfg: Config, name: str, hparams: Hparams | None = None) -> train.Best:
    """The best state of variant ``name`` that :func:`tokdyn.train.train_many` kept (``keep_best``)
    in the checkpoint at ``path``. A host function (reads a file).

    Args:
      path: the checkpoint's path.
      cfg: the training :class:`~tokdyn.models.latent.config.Config` it was trained with.
      name: the variant's name.
      hparams: the :class:`~tokdyn.models.latent.config.Hparams` of its settings (default: the
        defaults).

    Returns:
      :class:`tokdyn.train.Best`: the best state with its step and value per model.

    Raises:
      ValueError: a checkpoint of other models, settings or another variant, or one written
        without ``keep_best``.
    """
    return train.load_best(path, init_states(cfg, name, hparams), stamp(cfg, name))


@functools.lru_cache(maxsize=4)  # drawn once per configuration in a process (the arrays are immutable)
def data(cfg: Config) -> tasks.Splits:
    """The training pool, validation and test sets (:class:`tokdyn.data.grid_tasks.Splits` of
    device arrays), drawn from ``fold_in(key(root_seed), 0)``."""
    sp = tasks.splits(
        jax.random.fold_in(jax.random.key(cfg.root_seed), 0), cfg.n_train, cfg.n_test, cfg.task, n_val=cfg.n_val
    )
    return tasks.Splits(*(jax.tree.map(jnp.asarray, part) for part in sp))
