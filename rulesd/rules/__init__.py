"""Rule files: loading, validation, the condition language and templates."""
