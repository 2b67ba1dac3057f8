"""The workflow engine: change events, enrollments and durable delayed steps."""
