"""The training layer every model of tokdyn trains through.

- :mod:`tokdyn.train.optim`    ``Config`` (budget, schedule, clipping), ``schedule``, ``optimizer``
  (AdamW on optax, non-finite steps skipped and counted per model)
- :mod:`tokdyn.train.trainer`  ``Trainer`` (what a model supplies: init, loss, batch),
  ``Curriculum`` (trainers in sequence), ``TrainState``, ``make_step``
- :mod:`tokdyn.train.loop`     ``make_train`` (one model, pure), ``train_many`` (seeds x settings,
  vmapped, sharded, evaluated, checkpointed, resumable, the best state kept), ``grid``
- :mod:`tokdyn.train.strategies` how a call runs its models (``"scan"``, ``"step"``, ``"loop"``),
  ``make_chunk``
- :mod:`tokdyn.train.sizing`   how many models a device vmaps at once under
  ``Execution(batch_size="auto")``: XLA's memory analysis against the device's limit
- :mod:`tokdyn.train.results`  ``Result``, ``Best`` (the best state kept), the skipped steps
  (``nan_report``, ``skipped_counts``, ``warn_skipped``)
- :mod:`tokdyn.train.checkpoints` ``save_checkpoint``, ``load_checkpoint``, ``load_best``,
  ``checkpoint_stamp`` (an ``.npz`` file, or a directory in orbax's format)
- :mod:`tokdyn.train.loggers`  ``TensorBoardLogger``, ``WandbLogger``: ``on_log`` hooks writing every
  model's logs under its name (``model_names``)
- :mod:`tokdyn.train.options`  ``Checkpointing``, ``Evaluation``, ``Execution``: the option values of
  ``train_many`` (where work is kept; evaluation, the best state and stopping; devices and strategy)
- :mod:`tokdyn.train.stopping` ``Patience``: a stop rule over recorded curves that survives plateaus
  (patience on the best score, a minimum budget, held back while the training loss still falls)
- :mod:`tokdyn.train.store`    a directory of trained models: which are finished, one read back at its
  best or final state (strictly, for a reader), what is missing trained by its owner's function

A new model writes a ``Trainer`` and hands it to ``train_many``::

    trainer = train.Trainer(config=train.Config(steps=1000), init=init, loss=loss, batch=batch)
    keys, hp = train.grid(jax.random.split(jax.random.key(0), 4), MyHparams(learning_rate=jnp.array([1e-3, 3e-3])))
    result = train.train_many(trainer, data, keys, hp, checkpointing=train.Checkpointing("run.npz"))

and, to stop on a validation score and keep each model's best state::

    evaluate = lambda step, state: {"val_accuracy": my_accuracy(state.params, val)}   # each (M,)
    stop = train.Patience().stopper(trainer.config, "val_accuracy")
    result = train.train_many(trainer, data, keys, hp, checkpointing=train.Checkpointing("run.npz"),
                              evaluation=train.Evaluation(evaluate, keep_best="val_accuracy", stop=stop))
    result.best_state, result.best_step
"""

from tokdyn.train.checkpoints import checkpoint_stamp, load_best, load_checkpoint, save_checkpoint  # noqa: F401
from tokdyn.train.loggers import TensorBoardLogger, WandbLogger, model_names  # noqa: F401
from tokdyn.train.loop import broadcast, grid, init_states, make_train, settings, train_many  # noqa: F401
from tokdyn.train.options import BEST_MODES, STRATEGIES, Checkpointing, Evaluation, Execution  # noqa: F401
from tokdyn.train.results import Best, Result, nan_report, skipped_counts, warn_skipped  # noqa: F401
from tokdyn.train.strategies import make_chunk  # noqa: F401
from tokdyn.train import sizing, store  # noqa: F401 (train.sizing; train.store, the trained-model store)
from tokdyn.train.optim import Config, log_interval, optimizer, schedule  # noqa: F401
from tokdyn.train.stopping import Decision, Patience  # noqa: F401
from tokdyn.train.trainer import Curriculum, Trainer, TrainState, init_state, make_step, split_keys  # noqa: F401
