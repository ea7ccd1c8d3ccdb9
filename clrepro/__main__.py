"""`python -m clrepro run ...` / `python -m clrepro list`: see clrepro.cli."""

from clrepro.cli import main

raise SystemExit(main())
