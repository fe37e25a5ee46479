"""``python -m mmgen`` runs the command line."""

from mmgen.cli import main

main()
