"""``python -m matxfer``: the command line, where the ``matxfer`` script is not installed."""

from matxfer.cli import main

main()
