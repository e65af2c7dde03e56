"""What every package shares: the error types and the reason codes with their rule IDs.

A leaf: it imports nothing of this project, so ``releases``, ``agent``, ``fleet`` and
``simulator`` can all stand on it.
"""
