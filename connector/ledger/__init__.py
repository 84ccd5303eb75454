"""The ledger: every verified event, stored once, with its deliveries and their history."""

from connector.ledger.database import create_ledger_engine, write_transaction
from connector.ledger.events import IncomingEvent, StoredEvent, record_event
from connector.ledger.models import Base, Delivery, DeliveryAttempt, Event, EventState, RecordLink

__all__ = [
    "Base",
    "Delivery",
    "DeliveryAttempt",
    "Event",
    "EventState",
    "IncomingEvent",
    "RecordLink",
    "StoredEvent",
    "create_ledger_engine",
    "record_event",
    "write_transaction",
]
