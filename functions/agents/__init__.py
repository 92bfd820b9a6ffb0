"""Reference agents: a document-analysis chain that shows fan-out, fan-in and retries.

``planner`` splits a submitted document into chunks and fans one work item per chunk out to
the broker; ``worker`` analyses a chunk (word and sentence counts, term frequencies, its key
sentence); ``aggregator`` joins the results of one chain (keyed by chain id, idempotently) into
a report; ``flaky`` fails the first attempts of each event on purpose, for the retry demo.

Each module declares ``agent`` (serve with ``agentfn serve agentfn.functions.agents.worker``) and
``function`` (``functions-framework --asgi --target=function --source=.../worker.py``).
"""
