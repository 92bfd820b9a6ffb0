"""The agent runtime, the CLI, and the reference agents."""
