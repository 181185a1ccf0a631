"""gmp-mes: manufacturing execution and chain of identity for autologous cell therapies."""

from gmp_mes.app import create_app

__all__ = ["create_app"]
