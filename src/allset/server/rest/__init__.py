"""The REST API under /api/v1 (FastAPI, so the OpenAPI document is generated)."""
