"""``python -m lsm.cli``: the ``lsm`` command."""

import sys

from lsm.cli import main

sys.exit(main())
