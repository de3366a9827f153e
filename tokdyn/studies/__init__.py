"""End-to-end studies: one module per study (config -> runs -> tables -> plots); their quick
presets are labelled through :mod:`tokdyn.experiment.presets`."""
