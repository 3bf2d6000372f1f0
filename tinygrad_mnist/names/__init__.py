"""A character-level model of names (as makemore): data, models and training, run by
`tinygrad-mnist names`."""
