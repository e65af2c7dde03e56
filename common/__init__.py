"""What every package shares: the error types, the reason codes with their rule IDs, validation.

A leaf: it imports nothing of this project, so ``releases``, ``agent``, ``fleet`` and
``simulator`` can all stand on it.
"""
