"""Pure online detectors: they see decoded events and report findings.

No I/O lives here: no Kafka, no SQL, no Slack, no wall clock. Time arrives as
an argument (the event's own ``ts`` or a watermark), so a replay of archived
events gives the same findings as the live run.
"""

from detectors.base import Detector, Finding
from detectors.event import Event
from detectors.keyed import Keyed

__all__ = ["Detector", "Event", "Finding", "Keyed"]
