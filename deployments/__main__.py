"""``python -m deployments`` is ``rubin-upgrade``."""

import sys

from deployments.cli import main

sys.exit(main())
