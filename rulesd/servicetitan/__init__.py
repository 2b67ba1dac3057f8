"""The ServiceTitan API: entity catalog, HTTP client and a local simulator."""
