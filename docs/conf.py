"""Sphinx configuration of the tokdyn documentation.

Build (strict: a warning, a broken cross-reference or a public name without a docstring fails)::

    sphinx-build -W --keep-going -n -b html docs docs/_build/html
"""

import glob
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, ROOT)

import tokdyn  # noqa: E402

project = "tokdyn"
author = "the tokdyn authors"
copyright = "the tokdyn authors"  # noqa: A001
release = version = tokdyn.__version__

extensions = [
    "myst_nb",                 # Markdown pages (MyST) and the notebooks, rendered with their saved outputs
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",     # the docstrings' Google-style sections (Args, Returns, Attributes)
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from the site itself: math renders offline too
    "tokdyn_api",              # docs/_ext/tokdyn_api.py: the API pages, the docstring check, references
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "README.md"]
nitpicky = True

# Cross-references that cannot resolve yet: names in docstrings of files being rewritten by their
# owners (each is to be fixed there, and removed from this list).
nitpick_ignore = [
    ("py:meth", "close"),    # tokdyn.io.Progress names Progress.close, which has no docstring yet
    ("py:meth", "ratios"),   # tokdyn.studies.collapse.Config.estimate names Config.ratios, which has none yet
]

# Public functions, classes, methods and properties without a docstring, in files being rewritten
# by their owners (each is to be documented there, and removed from this list; a listed name that
# has a docstring now is reported).
tokdyn_undocumented_allowed = [
    "tokdyn.engine.sweep.Grid.names",
    "tokdyn.engine.sweep.Grid.from_dict",
    "tokdyn.experiment.reasoners.Config.validate",
    "tokdyn.experiment.study.version",
    "tokdyn.experiment.study.describe",
    "tokdyn.experiment.study.Study.name",
    "tokdyn.experiment.study.Study.part_path",
    "tokdyn.io.read_json",
    "tokdyn.io.Progress.rate",
    "tokdyn.io.Progress.close",
    "tokdyn.studies.collapse.Config.validate",
    "tokdyn.studies.collapse.Config.ratios",
    "tokdyn.studies.collapse.Config.run_fn",
    "tokdyn.studies.collapse.write_figures",
    "tokdyn.studies.collapse.summarise",
    "tokdyn.studies.collapse.format_summary",
    "tokdyn.studies.grid_diffusion.Config.validate",
    "tokdyn.studies.grid_diffusion.Config.autoencoder",
    "tokdyn.studies.grid_diffusion.Config.model",
    "tokdyn.studies.grid_diffusion.Config.runs",
    "tokdyn.studies.grid_diffusion.plot_curves",
    "tokdyn.studies.grid_diffusion.summary",
    "tokdyn.studies.grid_diffusion.write_samples",
    "tokdyn.studies.latent_diagnostics.Config.validate",
    "tokdyn.studies.latent_diagnostics.Config.reasoning",
    "tokdyn.studies.latent_diagnostics.Config.probe_config",
    "tokdyn.studies.latent_diagnostics.Config.probe_hparams",
    "tokdyn.studies.latent_diagnostics.Config.feedback",
    "tokdyn.studies.latent_diagnostics.plot_probes",
    "tokdyn.studies.latent_diagnostics.summary",
    "tokdyn.studies.latent_optimisation.Config.validate",
    "tokdyn.studies.latent_optimisation.Config.optimiser",
    "tokdyn.studies.latent_optimisation.Config.hparams",
    "tokdyn.studies.latent_optimisation.plot_optimiser",
    "tokdyn.studies.latent_optimisation.plot_grounding",
    "tokdyn.studies.latent_optimisation.summary",
    "tokdyn.studies.object_discovery.Config.validate",
    "tokdyn.studies.object_discovery.Config.n_slots",
    "tokdyn.studies.object_discovery.Config.generate_args",
    "tokdyn.studies.object_discovery.Config.slot_config",
    "tokdyn.studies.object_discovery.rows_of",
    "tokdyn.studies.object_discovery.summary",
    "tokdyn.studies.object_discovery.plot_examples",
    "tokdyn.studies.object_discovery.plot_curves",
    "tokdyn.studies.token_dynamics.format_tables",
    "tokdyn.studies.token_dynamics_sweep.Config.validate",
    "tokdyn.studies.token_dynamics_sweep.Config.cluster_counts",
    "tokdyn.studies.token_dynamics_sweep.Config.task",
    "tokdyn.studies.token_dynamics_sweep.Config.grid",
    "tokdyn.studies.token_dynamics_sweep.Config.rule_axes",
    "tokdyn.studies.token_dynamics_sweep.Config.data_axes",
    "tokdyn.studies.token_dynamics_sweep.plot_jobs",
    "tokdyn.studies.visual_tokens.Config.validate",
    "tokdyn.train.optim.Config.validate",
    "tokdyn.train.trainer.Curriculum.first",
    "tokdyn.transformations.Row.cell",
    "tokdyn.transformations.Row.module",
]

# -- MyST and notebooks ----------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"          # notebooks are rendered with the outputs saved in them
nb_merge_streams = True

# -- autodoc ---------------------------------------------------------------------------------------
autodoc_member_order = "bysource"
add_module_names = False            # entries read `run(x, tokens, ...)`, under their module's title
autodoc_typehints = "signature"
python_use_unqualified_type_names = True   # annotations link to their entry, shown by their short name
autodoc_preserve_defaults = True    # defaults as written (``jnp.float32``), not their repr
autosummary_generate = False        # the pages are written by tokdyn_api
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True            # Attributes: sections as fields, not entries that duplicate autodoc's
napoleon_use_rtype = False

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"tokdyn {release}"
html_static_path = []
html_show_sourcelink = False


def copy_notebooks():
    """The notebooks live in notebooks/ at the repository root; Sphinx reads sources only under
    docs/, so they are copied to docs/notebooks/ (ignored by git) before every build."""
    target = os.path.join(HERE, "notebooks")
    os.makedirs(target, exist_ok=True)
    sources = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
    names = {os.path.basename(p) for p in sources}
    for stale in glob.glob(os.path.join(target, "*.ipynb")):
        if os.path.basename(stale) not in names:
            os.remove(stale)
    for path in sources:
        dest = os.path.join(target, os.path.basename(path))
        if not os.path.exists(dest) or open(path, "rb").read() != open(dest, "rb").read():
            shutil.copyfile(path, dest)


copy_notebooks()
