"""Postgres: the server (embedded or configured), connections and migrations."""
