"""Command-line entry points. Only this package prints or exits; library code raises ToolkitError."""
