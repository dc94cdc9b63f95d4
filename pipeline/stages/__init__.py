"""Validate, infer, route: plain functions and classes over the contracts. No Kafka here."""
