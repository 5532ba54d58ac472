"""``python -m rpg ...``: the ``rpg`` command line (:mod:`rpg.cli`)."""

import sys

from rpg.cli import main

sys.exit(main())
