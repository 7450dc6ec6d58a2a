"""``python -m flowkit`` runs the ``flowkit`` command."""

import sys

from flowkit.cli import main

sys.exit(main())
