"""``python -m mmgen`` runs the command line."""

import sys

try:
    from mmgen.cli import main
except KeyboardInterrupt:  # Ctrl-C while the first modules load: one line, as in main()
    print("Interrupted while starting; nothing was done.", file=sys.stderr)
    raise SystemExit(130) from None  # mmgen.cli.EXIT_INTERRUPTED, which did not load

main()
