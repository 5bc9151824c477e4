from __future__ import annotations

import sys

from edgeguard.cli import main

sys.exit(main())
