"""The embedded event log: SQLite in WAL mode, for development, tests and one machine.

:mod:`~agentfn.brokers.embedded.log` holds :class:`SqliteEventLog` and its writer thread,
:mod:`~agentfn.brokers.embedded.subscription` a Trigger's reader of it.
"""

from agentfn.brokers.embedded.log import SqliteEventLog

__all__ = ["SqliteEventLog"]
