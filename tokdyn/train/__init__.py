"""The training layer every model of tokdyn trains through.

- :mod:`tokdyn.train.optim`    ``Config`` (budget, schedule, clipping), ``schedule``, ``optimizer``
  (AdamW on optax, non-finite steps skipped and counted per model)
- :mod:`tokdyn.train.trainer`  ``Trainer`` (what a model supplies: init, loss, batch),
  ``Curriculum`` (trainers in sequence), ``TrainState``, ``make_step``
- :mod:`tokdyn.train.loop`     ``make_train`` (one model, pure), ``train_many`` (seeds x settings,
  vmapped, sharded, checkpointed, resumable), ``grid``, checkpoints

A new model writes a ``Trainer`` and hands it to ``train_many``::

    trainer = train.Trainer(config=train.Config(steps=1000), init=init, loss=loss, batch=batch)
    keys, hp = train.grid(jax.random.split(jax.random.key(0), 4), MyHparams(learning_rate=jnp.array([1e-3, 3e-3])))
    result = train.train_many(trainer, data, keys, hp, checkpoint="run.npz")
"""

from tokdyn.train.loop import (STRATEGIES, Result, broadcast, checkpoint_stamp, grid, init_states,  # noqa: F401
                               load_checkpoint, make_chunk, make_train, nan_report, save_checkpoint, settings,
                               train_many)
from tokdyn.train.optim import Config, optimizer, schedule  # noqa: F401
from tokdyn.train.trainer import Curriculum, Trainer, TrainState, init_state, make_step, split_keys  # noqa: F401
