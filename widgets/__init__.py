"""Jupyter front-end of CNA Workbench (ipywidgets + plotly).

The widgets build on the :mod:`workbench` library and never reach into model internals
except through it. They are filled in by the widgets work; this package exists so that
the distribution layout is fixed from the start.
"""
