"""`python -m connector.cli ...`: the same command line as the `connector` script."""

from connector.cli import main

main()
