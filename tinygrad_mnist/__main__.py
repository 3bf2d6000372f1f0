"""`python -m tinygrad_mnist ...` is the `tinygrad-mnist` command."""
from .cli import main

raise SystemExit(main())
