"""``python -m promptgov`` runs the command line."""

from promptgov.cli import main

raise SystemExit(main())
