"""Fixtures of the fault suite: the integration tier's broker (the same one when both tiers run in one session:
`devkafka.start` hands back the session's running instance) and its fresh topic and group names."""

from __future__ import annotations

from tests.integration.conftest import kafka_bootstrap, random_name

__all__ = ["kafka_bootstrap", "random_name"]
