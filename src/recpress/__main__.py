"""`python -m recpress` runs the command line."""

from recpress.cli import main

main()
