"""Agents the runtime tests serve, some of them in a separate ``agentfn serve`` process."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from agentfn.functions import Agent, Context
from pydantic import BaseModel

__all__ = ["Done", "Job", "ledger"]


class Job(BaseModel):
    """Count the words of ``text``; append the event id to ``ledger`` (the side effect).

    With ``hang_marker`` set, the first delivery to reach the handler creates that file and
    then hangs until its process is killed; later deliveries find the file and do the work.
    """

    text: str
    ledger: str
    hang_marker: str | None = None


class Done(BaseModel):
    words: int
    pid: int


ledger = Agent("ledger", description="Counts words and records each job once in a ledger file.")


@ledger.on("test.job", emits={"test.done": Done})
def work(job: Job, ctx: Context) -> Done:
    # Synchronous: file I/O belongs in the worker thread the runtime runs it in.
    if job.hang_marker is not None and not os.path.exists(job.hang_marker):
        Path(job.hang_marker).write_text(str(os.getpid()), encoding="utf-8")
        threading.Event().wait()
    with open(job.ledger, "a", encoding="utf-8") as side_effect:
        side_effect.write(ctx.event.id + "\n")
    return Done(words=len(job.text.split()), pid=os.getpid())
