"""Horizontal federated learning on Flower's deployment engine (SuperLink + SuperNodes) with SecAgg+.

Parties hold different samples of the same features. The server task runs a SuperLink and submits
the ServerApp in ``app/`` to it; each party task runs a SuperNode that executes the ClientApp on
that party's own shard. See ``privacy/README.md`` for the command lines.
"""
