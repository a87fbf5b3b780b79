"""The events actor: sequence numbers, the journal, pub/sub fan-out and batches."""
