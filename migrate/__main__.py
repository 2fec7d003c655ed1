"""``python -m migrate``: the ``migrate`` command."""

import sys

from migrate.entry import main

sys.exit(main())
