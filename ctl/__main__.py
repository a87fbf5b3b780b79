"""Lets ``python -m ctl`` behave like the installed ``actr`` script."""

import sys

from ctl.main import main

sys.exit(main())
