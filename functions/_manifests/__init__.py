"""Deployment manifests rendered from the agents' declarations: one source of truth.

``agentfn render`` turns what each agent declares (handlers and their filters, ``Scaling``,
``Resources``, ``Delivery``) into the complete set a cluster runs: a Knative Service per agent,
the SinkBinding that gives them the Broker's address, the Kafka-backed Broker and its ConfigMap,
a Trigger per subscription with a complete ``delivery``, the ``dead-letters`` sink and its
alert, the namespace's quota, the collector, Redis; beside them in ``kserve/`` the model servers as
KServe InferenceServices (a MIG and a CPU variant), their GPU quota and an optional Kueue set
(:mod:`.inference`); or, with ``--compose``, a Compose file for Docker without Kubernetes.
Every function here is pure: plain data in, plain documents out.
"""
