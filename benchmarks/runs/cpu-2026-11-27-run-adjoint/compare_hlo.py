"""The default run's optimised XLA program (text) and results, written under the prefix argv[1]
(run by compare_hlo.sh with each tree's tokdyn)."""

import re
import sys
import jax
import jax.numpy as jnp
import numpy as np
from tokdyn import data, dynamics
from tokdyn.engine.runs import ClusterRun

print(dynamics.__file__, file=sys.stderr)
k = jax.random.key(3)
c = data.gaussian_clusters(k, 4, points_per_cluster=50, dim=4, max_clusters=5)
t0 = dynamics.forgy(c.x, c.init_noise, c.mask, 4)
hp = dynamics.method("inertia+repulsion")
f = jax.jit(jax.vmap(lambda x, t, m: dynamics.run(x, t, hp, mask=m, n_steps=30)))
args = (jnp.stack([c.x] * 3), jnp.stack([t0, t0 + 0.1, t0 - 0.1]), jnp.stack([c.mask] * 3))
txt = f.lower(*args).compile().as_text()
txt = re.sub(r"metadata=\{[^}]*\}", "", txt)
txt = re.sub(r", (?:op_name|source_file|source_line)=[^,}\n]*", "", txt)
open(sys.argv[1] + ".hlo", "w").write(txt)
r = f(*args)
np.save(sys.argv[1] + ".npy", np.asarray(r.tokens))
# the engine's run, one seed through ClusterRun
run = ClusterRun()
out = jax.jit(jax.vmap(lambda s: run(jax.random.fold_in(jax.random.key(0), s))))(jnp.arange(8))
np.save(
    sys.argv[1] + "_engine.npy",
    np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree_util.tree_leaves(out)]),
)
