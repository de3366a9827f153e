"""x64 follows JAX: under ``JAX_ENABLE_X64=1`` every data generator and ``Hparams.stack`` default
to float64 (the same values as the float32 draws: they are drawn in float32 and cast up), and a
float64 repulsion run equals the float64 NumPy reference rule (tests/reference_rules.py) to 1e-9.

One child process with x64 on (JAX's x64 switch is process-wide), small shapes."""

import json
import os
import subprocess
import sys

import numpy as np

from conftest import child_env

CHILD = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, {tests!r})
from tokdyn import data, dynamics
from reference_rules import reference_run_rules

key = jax.random.key(3)
out = {{}}
c = data.gaussian_clusters(key, 3, points_per_cluster=20, dim=2, noise=0.5, center_box=4.0)
c32 = data.gaussian_clusters(key, 3, points_per_cluster=20, dim=2, noise=0.5, center_box=4.0, dtype="float32")
out["clusters"] = [str(c.x.dtype), bool((np.asarray(c.x) == np.asarray(c32.x, np.float64)).all())]
out["point_cloud"] = str(data.point_cloud(key, "blobs2", 18).dtype)
out["moving"] = str(data.moving_clusters(key, 3, 2, points_per_cluster=4).x.dtype)
s = data.sprite_scenes(key, 1, size=8, max_objects=2)
out["scenes"] = str(s.images.dtype)
out["features"] = str(data.pixel_features(s.images[0]).dtype)
out["videos"] = str(data.sprite_videos(key, 1, frames=2, size=8, max_objects=2).images.dtype)
hp = dynamics.Hparams.stack([dynamics.METHODS["repulsion"], dynamics.METHODS["inertia+repulsion"]])
out["stack"] = str(hp.repulsion.dtype)
t0 = dynamics.forgy(c.x, c.init_noise, c.mask, 4)
out["diff"] = {{}}
for i, name in enumerate(["repulsion", "inertia+repulsion"]):
    h = jax.tree_util.tree_map(lambda v: v[i], hp)
    ref = reference_run_rules(np.asarray(c.x), np.asarray(t0), temperature=1.0, momentum=float(h.momentum),
                              repulsion=float(h.repulsion), n_steps=30, tol=1e-3)
    for anchor, rule in dynamics.MASS_ANCHORS.items():
        r = dynamics.run(c.x, t0, h, rule=rule, n_steps=30, tol=1e-3)
        out["diff"][name + "/" + anchor] = [
            float(np.abs(np.asarray(r.tokens) - ref["tokens"]).max()), int(r.steps), int(ref["steps"]),
            str(r.tokens.dtype),
        ]
print("RESULT " + json.dumps(out))
"""


def test_x64_defaults_and_a_float64_run_equals_its_reference():
    tests = os.path.dirname(__file__)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(tests=tests)],
        env=child_env(JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["clusters"] == ["float64", True]  # float64 by default, the float32 draws' values
    for name in ("point_cloud", "moving", "scenes", "features", "videos", "stack"):
        assert out[name] == "float64", (name, out[name])
    for run, (diff, steps, ref_steps, dtype) in out["diff"].items():
        assert dtype == "float64" and steps == ref_steps, (run, out["diff"])
        # the reference's mean is the published one, (sum a x) / (sum a + 1e-8): "origin" is that
        # formula; "token" anchors the epsilon at the token instead, a change of order 1e-8 / mass
        assert diff < (1e-9 if run.endswith("origin") else 1e-8), (run, out["diff"])
    assert np.isfinite([d[0] for d in out["diff"].values()]).all()
