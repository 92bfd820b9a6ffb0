"""The gRPC contract: ``cloudevents.proto`` (the CloudEvents Protobuf format) and ``agent.proto``
(the agent service), with their generated modules (``python scripts/protos.py`` rewrites them;
never edit them by hand). :mod:`agentfn.events.protobuf` converts to and from
:class:`agentfn.events.CloudEvent`.
"""
