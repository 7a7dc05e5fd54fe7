"""``python -m roborl.cli ...``: the same as the ``roborl`` console script."""
import sys

from roborl.cli import main

sys.exit(main())
