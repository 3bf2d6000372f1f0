"""The five reference notebooks' own code (../shared/reference), copied as the notebooks wrote
it: their NumPy calls, their layouts, their backward formulas with their bugs. Only what checks
their gradients is copied (no data loading, training loops or plotting). Where a notebook's
code cannot run on Tensors unchanged, its module says which line and why."""
