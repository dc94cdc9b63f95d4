"""The escalation tier, Kafka-free: large-model client, limits, retries, breaker, cache, budget, prompts, redaction."""
