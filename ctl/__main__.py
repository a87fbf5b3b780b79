"""Lets ``python -m ctl`` behave like the installed ``actr`` script."""

from ctl.main import console_main

console_main()
