"""Entry point for ``python -m callback_ari``."""

from callback_ari.cli import main

raise SystemExit(main())
