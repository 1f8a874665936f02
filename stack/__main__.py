"""``python -m stack``: the ``tapstack`` command."""

import sys

from stack.control.cli import main

sys.exit(main())
