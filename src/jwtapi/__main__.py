"""``python -m jwtapi``: the same as the ``jwtapi`` command."""

from jwtapi.cli import main

raise SystemExit(main())
