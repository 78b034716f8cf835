"""Publishing to streamrec from an app: validated events, keyed by user, flushed on exit.

>>> from producers import EventProducer                          # doctest: +SKIP
>>> with EventProducer.from_env() as p:                          # doctest: +SKIP
...     p.send({"user_id": "u42", "item_id": "m1337", "event_type": "click"})
"""

from producers.events import DeliveryReport, EventProducer

__all__ = ["DeliveryReport", "EventProducer"]
