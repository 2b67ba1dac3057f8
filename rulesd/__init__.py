"""rulesd: a ServiceTitan mirror in Postgres with automation rules run over it."""

__version__ = "0.1.0"
