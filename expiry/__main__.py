"""`python -m expiry`: the operator CLI, the same as the `expiry` command (see runtime/cli.py)."""

from expiry.runtime.cli import main

raise SystemExit(main())
