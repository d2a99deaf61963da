"""Database access: async SQLAlchemy 2 over asyncpg (Postgres) or aiosqlite (the embedded default)."""
