"""The sync engine of the Software (R-SYNC-1..3): scanner -> planner (pure) -> executor.

It reaches the server over HTTP like any client (``allset.client``), never its database
or storage; the design is in docs/design/sync-protocol.md.
"""
