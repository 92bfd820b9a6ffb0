"""How events move: ingress, Triggers, delivery, the embedded and Kafka backends, dead letters."""
