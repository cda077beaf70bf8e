"""The version of cna-workbench, in a module that imports nothing.

The package re-exports it as ``workbench.__version__``; modules inside the package (the
``created_by`` of a circuit) import it from here, never from the package itself, which
imports nearly every module. The build reads it from this file too.

Example:
    >>> from workbench.version import __version__
    >>> __version__.count(".")
    2
"""

__version__ = "0.1.0"
