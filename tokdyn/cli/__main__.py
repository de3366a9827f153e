"""``python -m tokdyn.cli``: the ``tokdyn`` command (:func:`tokdyn.cli.main`)."""

import sys

from tokdyn.cli import main

sys.exit(main())
