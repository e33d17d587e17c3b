"""Command lines: ``allset-server`` (operator) and ``allset`` (the Client's Software)."""
