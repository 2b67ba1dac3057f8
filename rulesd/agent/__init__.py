"""The agent: Claude carries out steps through guarded messaging tools."""
