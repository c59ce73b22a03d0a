"""NATS helpers: the embedded server, stream definitions, direct reads, micro services."""
