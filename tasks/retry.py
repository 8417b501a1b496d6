"""Retry policy shared by the I/O tasks: exponential backoff with jitter, never on a rejected request."""

from __future__ import annotations

import os
from typing import Any

from prefect.tasks import exponential_backoff

from baynet.events import EventError
from baynet.loki import LokiRejected
from baynet.prometheus import PrometheusRejected
from baynet.tempo.client import TempoRequestError
from baynet.topology import TopologyError, TopologyMissing
from baynet.validation import ValidationFailed

# Deterministic failures: the same input fails the same way, so a retry only delays the report.
NOT_RETRIED = (TempoRequestError, LokiRejected, PrometheusRejected, TopologyMissing, ValidationFailed, EventError,
               ValueError, TypeError, KeyError)

IO_RETRIES = 3
# Delays 2, 4, 8 s by default; BAYNET_IO_RETRY_BACKOFF_S (read when the tasks are imported) scales them.
IO_RETRY_DELAYS = exponential_backoff(backoff_factor=float(os.environ.get("BAYNET_IO_RETRY_BACKOFF_S", "2")))
IO_RETRY_JITTER = 0.5


def retry_unless_rejected(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry I/O trouble (429, 5xx, network), not 4xx or bad data."""
    try:
        state.result()
    except NOT_RETRIED:
        return False
    except TopologyError as exc:
        return "rejected" not in str(exc)
    except Exception:
        return True
    return False
