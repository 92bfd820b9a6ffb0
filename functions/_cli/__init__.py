"""The agentfn commands, one module each; see :mod:`agentfn.functions.cli`."""
