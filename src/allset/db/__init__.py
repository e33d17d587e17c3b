"""Metadata storage: SQLAlchemy 2 models, engine set-up, Alembic migrations.

SQLite (WAL) is the embedded default; PostgreSQL (psycopg 3) for scale. Only the
façades (``files``, ``accounts``) use these tables directly.
"""
