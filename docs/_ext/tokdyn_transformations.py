"""The documentation's page of transformations per kernel, ``docs/transformations.md``, written from
the table that the tests check (``tests/transformations_table.py``).

At every build (``builder-inited``) the page is rendered from the table and written when it
differs, so the site never shows a stale table; ``python docs/_ext/tokdyn_transformations.py``
prints the page and ``--write`` writes it (the file is committed: the README links to it), and
``tests/test_transformations.py`` checks that the committed file is what :func:`render` gives.
Standard library only: the table is plain data, loaded from its file.
"""

from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TABLE_FILE = os.path.join(ROOT, "tests", "transformations_table.py")
PAGE = os.path.join(ROOT, "docs", "transformations.md")


def load_table(path: str = TABLE_FILE):
    """The table module (``TABLE``, ``HOST``, ``MODULES``, ``TRANSFORMATIONS``), loaded from its file."""
    spec = importlib.util.spec_from_file_location("tokdyn_transformations_table", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def render(table=None) -> str:
    """The markdown of ``docs/transformations.md``: one table per module, reasons as notes."""
    t = load_table() if table is None else table
    lines = [
        "# Transformations per kernel",
        "",
        "Which JAX transformations each public kernel of tokdyn supports. Generated from the table in",
        "`tests/transformations_table.py` by the docs build (or by",
        "`python docs/_ext/tokdyn_transformations.py --write`); every cell is checked by",
        "`tests/test_transformations.py`, which calls that transformation on small inputs: `yes` means it",
        "runs and agrees with a reference, `no` that it fails (so a fix must update this table), `n/a`",
        "that a derivative means nothing, for the reason given (also checked).",
        "",
        "- **jit**: traces, compiles and runs inside your own `jax.jit` (static arguments closed over).",
        "- **vmap**: `jax.vmap` over a batch of instances of the arguments in *batched* equals the instances",
        "  one by one (each under `jit`).",
        "- **grad**: reverse mode (`jax.grad`, `vjp`, `jacrev`) in the arguments of *differentiated in*:",
        "  finite, equal to central finite differences along a random direction and to forward mode.",
        "- **jacfwd**: forward mode (`jax.jvp`, `jacfwd`), checked the same way.",
        "- **shard_map**: `jax.shard_map` over the local devices, with JAX's default `check_vma=True`, each",
        "  vmapping its share of a batch (how `engine.execute.map_runs` runs sweeps), equals the vmapped",
        "  result. The loops of `dynamics` start from a state that varies over the devices whenever an",
        "  argument does, so any argument may be shared (unbatched) there.",
        "",
        "The models' derivatives are too curved for float32 differences: here their reverse mode equals",
        "their forward mode, and central differences in float64 check their losses (through `apply`) to",
        "a relative 1e-6 (`tests/test_model_gradients.py`, with the diffusion losses); the dynamics'",
        "gradients are checked so in `tests/test_gradients.py`.",
    ]
    for module in t.MODULES:
        rows = [r for r in t.TABLE if r.module == module]
        notes: list[str] = []
        lines += [
            "",
            f"## `tokdyn.{module}`",
            "",
            "| kernel | differentiated in | batched | " + " | ".join(t.TRANSFORMATIONS) + " |",
            "|---|---|---|" + "---|" * len(t.TRANSFORMATIONS),
        ]
        for r in rows:
            cells = []
            for name in t.TRANSFORMATIONS:
                text = r.cell(name)
                status, _, why = text.partition(":")
                if why:
                    why = why.strip()
                    if why not in notes:
                        notes.append(why)
                    status = f"{status} ({notes.index(why) + 1})"
                cells.append(status)
            name = r.kernel[len(module) + 1 :] if r.kernel.startswith(module + ".") else r.kernel
            lines.append(f"| `{name}` | {r.wrt or '-'} | {r.batched or '-'} | " + " | ".join(cells) + " |")
        if notes:
            lines.append("")
            lines += [
                f"({i}) {text}." if not text.endswith(".") else f"({i}) {text}" for i, text in enumerate(notes, 1)
            ]
    lines += [
        "",
        "## Host-side functions",
        "",
        "Public functions that are not kernels (they run on the host or make kernels):",
        "",
    ]
    lines += [f"- `tokdyn.{name}`: {why}." for name, why in t.HOST.items()]
    return "\n".join(lines) + "\n"


def write(path: str = PAGE) -> bool:
    """Write the page when it differs from :func:`render`; returns whether it was written."""
    text = render()
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def setup(app):
    app.connect("builder-inited", lambda app: write(os.path.join(app.srcdir, "transformations.md")))
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        print(PAGE if write() else f"{PAGE} (unchanged)")
    else:
        sys.stdout.write(render())
