"""The TCP forwarder the tests cut connections with; it lives in bench/proxy.py, which bench.chaos uses too."""

from bench.proxy import TcpProxy

__all__ = ["TcpProxy"]
