"""``python -m roborl ...`` (and ``torchrun -m roborl ...``): the same as the ``roborl`` console script."""
import sys

from roborl.cli import main

sys.exit(main())
