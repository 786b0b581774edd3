"""`python -m trinity_cli`: the same as the `trinity-process` command."""

import sys

from trinity_cli.main import main

sys.exit(main())
