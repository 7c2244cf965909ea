"""Storage: SQLModel tables, the engine and session factory, and one repository per aggregate."""
