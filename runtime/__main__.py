"""`python -m runtime`: the operator CLI (see runtime/cli.py)."""

from runtime.cli import main

raise SystemExit(main())
