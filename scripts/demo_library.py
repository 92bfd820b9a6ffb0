"""A demo-only agent: takes a document out of a library folder and submits it for analysis.

A notice (``agentfn.document.stored``) names a file of the folder ``AGENTFN_DEMO_LIBRARY``;
the agent replies with the ``agentfn.task.submitted`` event the planner consumes. A notice can
come before its file does (an upload still on its way): the agent answers 503 (retryable),
the broker retries a few times, gives up and dead-letters the notice. Once the file is in the
folder, replaying the dead letter goes through and the report follows. `make demo` runs it
(`scripts/demo.py`); it is not one of the reference agents a cluster gets.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Final

from agentfn.functions import Agent, Delivery, RetryableError
from agentfn.functions.agents.models import TASK_SUBMITTED, TaskSubmitted
from pydantic import BaseModel, Field

__all__ = ["DOCUMENT_STORED", "LIBRARY", "DocumentStored", "agent"]

DOCUMENT_STORED: Final = "agentfn.document.stored"
#: The folder the notices' file names are read from.
LIBRARY: Final = "AGENTFN_DEMO_LIBRARY"

agent = Agent(
    "library",
    description="Reads a stored document from the library folder and submits it for analysis.",
    delivery=Delivery(retry=2, backoff_policy="linear", backoff_delay=timedelta(milliseconds=100)),
)


class DocumentStored(BaseModel):
    """A document was stored as ``name`` in the library (a file name, no folders)."""

    name: str = Field(pattern=r"^[\w][\w.-]*$")
    title: str = ""
    max_words_per_chunk: int = Field(default=120, ge=5, le=10_000)
    top_terms: int = Field(default=5, ge=1, le=50)


@agent.on(DOCUMENT_STORED, emits={TASK_SUBMITTED: TaskSubmitted})
def fetch(notice: DocumentStored) -> TaskSubmitted:
    # Synchronous: the runtime runs it in a worker thread, off the event loop.
    path = Path(os.environ.get(LIBRARY, ".data/library")) / notice.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        # Not there yet may mean not there *yet*: worth a retry, then a dead letter to replay.
        raise RetryableError(f"{notice.name} is not in the library") from None
    return TaskSubmitted(
        text=text,
        title=notice.title,
        max_words_per_chunk=notice.max_words_per_chunk,
        top_terms=notice.top_terms,
    )
