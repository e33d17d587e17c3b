"""Content-addressed chunk storage: where bytes land.

``backend.Backend`` is the small contract every store honours (local volume, memory,
later S3); ``replicated.ReplicatedStore`` keeps every chunk on each of several backends
(R-STORE-4) and verifies and repairs on read; ``chunker`` cuts streams into
content-defined chunks so that later uploads send only what changed.
Imports only ``allset.core``.
"""
