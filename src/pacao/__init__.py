"""pacao: link virtual-machine mobility to user mobility over LISP (PACAO)."""

__version__ = "0.1.0"
