"""Sync: loads ServiceTitan records into the mirror tables and keeps them current."""
