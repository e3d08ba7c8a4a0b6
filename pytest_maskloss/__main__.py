"""``python -m pytest_maskloss scan ...``"""

import sys

from pytest_maskloss.cli import main

sys.exit(main())
