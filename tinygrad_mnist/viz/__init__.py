"""Seeing the graph: draw_graph (an SVG of the graph, with graphviz), explore (one HTML page
with a backward stepper) and record_modules (module boxes for both).

    drawing.py    draw_graph, record_modules, rendering with or without a system Graphviz
    explorer.py   explore: the page, its data and its stepper
"""
from .drawing import FALLBACK_FORMATS, ModuleBoxes, draw_graph, record_modules, render
from .explorer import explore

__all__ = ["draw_graph", "explore", "record_modules", "ModuleBoxes", "render",
           "FALLBACK_FORMATS"]
