"""`python -m tinygrad_mnist ...` is the `tinygrad-mnist` command."""
from .mnist.cli import main

raise SystemExit(main())
