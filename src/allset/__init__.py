"""allset: online storage and synchronisation for businesses.

Layers (see docs/architecture.md): core (pure) → blobstore, db → files, accounts
(the policy façades) → server, cli (thin adapters).
"""

__version__ = "0.1.0"
