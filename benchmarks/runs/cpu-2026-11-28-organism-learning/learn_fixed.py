import time
import numpy as np
import sys
from tokdyn.models.organism import training as T
from tokdyn.models.latent import tasks as lt
from tokdyn.train import optim

steps = int(sys.argv[1])
lr = float(sys.argv[2])
name = sys.argv[3]
fam = tuple(sys.argv[4].split(","))
order = sys.argv[5]
nopt = 5 if order == "fixed" else 4
cfg = T.Config(
    tasks=T.tasks_lib.Config(task=lt.Config(grid_size=4, n_colours=4, families=fam), n_options=nopt, order=order),
    train=optim.Config(steps=steps, steps_per_call=100, warmup=100, decay="cosine", clip_norm=1.0),
    n_train=4096,
    n_test=256,
    seeds=1,
    batch_size=32,
)
tr, te = T.data(cfg)
t = time.time()
res = T.train_models(cfg, name, T.Hparams(learning_rate=lr))
print(name, lr, order, "train s", round(time.time() - t, 1), flush=True)
for k in ("loss", "answer_acc"):
    print(k, np.asarray(res.curves[k])[0].round(3).tolist(), flush=True)
print("test acc", T.answer_accuracy(cfg, name, res.state.params, te).mean(1), flush=True)
