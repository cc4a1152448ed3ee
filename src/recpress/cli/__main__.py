"""`python -m recpress.cli` runs the command line."""

from recpress.cli import main

main()
