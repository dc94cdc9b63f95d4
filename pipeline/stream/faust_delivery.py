"""faust's app with Minnow's delivery promise on every producer it makes.

faust turns on idempotence only for the producers of exactly-once transactions (`Producer._settings_extra` in
faust/transport/drivers/aiokafka.py); at-least-once, a send retried after a lost acknowledgement would write an
output twice. This app's transport builds producers that are `acks=all` and idempotent in both modes (unless the
cluster cannot: `MINNOW_KAFKA__ENABLE_IDEMPOTENCE=false`), through faust's own extension point, `Transport.Producer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


def _transport_class(delivery: Mapping[str, Any]) -> type[faust_aiokafka.Transport]:
    class Producer(faust_aiokafka.Producer):
        def _settings_extra(self) -> Mapping[str, Any]:
            # In a transaction faust's own choice stands (acks=all, idempotent); outside one, ours.
            return {**delivery, **super()._settings_extra()}

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Producer = Producer
    return Transport


class DeliveryApp(faust.App):
    """A faust App whose consumer and producer transports make producers with `delivery` (aiokafka's options)."""

    def __init__(self, *args: Any, delivery: Mapping[str, Any], **kwargs: Any) -> None:
        self._transport_type = _transport_class(dict(delivery))
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return self._transport_type(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return self._transport_type(self.conf.broker_producer, self)
