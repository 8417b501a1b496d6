"""The SQS consumer behind ``baynet listen``.

It long-polls the queue and hands each event to a handler (the incident flow). The contract:

* a message is deleted only after its analysis succeeded (or it was a duplicate / a resolved event);
* a message that cannot be parsed is copied to the dead-letter queue with the reason in its message
  attributes, logged, and only then deleted — never dropped silently (without a DLQ configured it is
  left on the queue, and the queue's RedrivePolicy moves it after ``maxReceiveCount`` receives);
* a failed analysis leaves the message on the queue: it comes back after ``retry_after_s`` and, after
  ``maxReceiveCount`` receives, the RedrivePolicy moves it to the DLQ;
* an event already analysed (its artifacts are complete) or in flight is not analysed again — in flight on
  this consumer's threads, or, with ``claim`` given, on any consumer on any host: an analysis first takes
  a lease on its event in the artifact store (:class:`baynet.state.Claims`), renewed with the heartbeat,
  and a message whose events are all leased elsewhere is collapsed as a duplicate (the holder's own
  message stays on the queue until its analysis completes, so nothing is lost);
* while an analysis runs, a heartbeat extends the message's visibility so it is not delivered twice;
* with ``concurrency`` > 1, that many analyses run at once (threads); a message whose event is already
  being analysed by another thread is collapsed as a duplicate;
* when the queue endpoint goes away (restart, network), receiving backs off and reconnects; a delete
  that fails leaves the message to come back, where it is collapsed as a duplicate of the finished event.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from baynet.events import AnomalyEvent, EventError, parse_message

log = logging.getLogger(__name__)

Handler = Callable[[AnomalyEvent], Any]


@dataclass
class Outcome:
    message_id: str
    result: str            # analysed | duplicate | dead-lettered | failed | resolved | deferred
    event_ids: list[str] = field(default_factory=list)
    detail: str = ""


def create_queues(sqs: Any, name: str, *, max_receive_count: int = 3, visibility_timeout: int = 300
                  ) -> tuple[str, str]:
    """Create (or find) a queue and its dead-letter queue wired by a RedrivePolicy; return both URLs."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": redrive,
                                                       "VisibilityTimeout": str(visibility_timeout)})["QueueUrl"]
    return url, dlq_url


class Consumer:
    def __init__(self, sqs: Any, queue_url: str, handler: Handler, *, dlq_url: str | None = None,
                 is_done: Callable[[str], bool] = lambda event_id: False, wait_s: int = 20,
                 visibility_s: int = 300, retry_after_s: int = 30, concurrency: int = 1,
                 claim: Callable[[str], Any] | None = None,
                 ready_at: Callable[[AnomalyEvent], float] | None = None):
        """``ready_at``: when an event's data has settled (unix seconds); an event that arrives before then
        waits on the queue, not in this process."""
        self.sqs, self.queue_url, self.dlq_url = sqs, queue_url, dlq_url
        self.ready_at = ready_at
        self.handler, self.is_done, self.claim = handler, is_done, claim
        self.wait_s, self.visibility_s, self.retry_after_s = wait_s, visibility_s, retry_after_s
        self.concurrency = max(1, concurrency)
        self.in_flight: set[str] = set()
        self.done: set[str] = set()
        self._lock = threading.Lock()
        self.current = threading.local()  # the message being handled on this thread (id, receive count)
        self.stop = threading.Event()
        self.outcomes: list[Outcome] = []

    # --- receiving -------------------------------------------------------------------------------

    def receive(self, n: int = 1) -> list[dict[str, Any]]:
        resp = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=max(1, min(10, n)), WaitTimeSeconds=self.wait_s,
            VisibilityTimeout=self.visibility_s, MessageSystemAttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        )
        return resp.get("Messages", [])  # an empty receive has no "Messages" key at all

    def run(self, *, max_messages: int | None = None, idle_polls: int | None = None,
            on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Poll until stopped, ``max_messages`` handled, or ``idle_polls`` empty polls in a row (with
        nothing in flight); up to ``concurrency`` messages are analysed at once."""
        handled = idle = failures = 0
        running: set[Future] = set()

        def collect(finished: set[Future]) -> None:
            nonlocal handled
            for fut in finished:
                outcome = fut.result()
                self.outcomes.append(outcome)
                if on_outcome:
                    on_outcome(outcome)
                handled += 1

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="baynet-analysis") as pool:
            while not self.stop.is_set():
                done = {f for f in running if f.done()}
                running -= done
                collect(done)
                if max_messages is not None and handled + len(running) >= max_messages:
                    if not running:
                        break
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    collect(finished)
                    continue
                free = self.concurrency - len(running)
                if free <= 0:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    collect(finished)
                    continue
                if max_messages is not None:
                    free = min(free, max_messages - handled - len(running))
                try:
                    messages = self.receive(free)
                    failures = 0
                except Exception as exc:  # the queue endpoint restarted or the network blipped: reconnect
                    failures += 1
                    delay = min(30.0, 0.5 * 2**failures)
                    log.warning("receive from %s failed (%s); retrying in %.1fs", self.queue_url, exc, delay)
                    self.stop.wait(delay)
                    continue
                if not messages:
                    idle += 1
                    if idle_polls is not None and idle >= idle_polls and not running:
                        break
                    continue
                idle = 0
                if self.concurrency == 1:
                    for message in messages:
                        fut: Future = Future()
                        fut.set_result(self.handle(message))
                        collect({fut})
                else:
                    running.update(pool.submit(self.handle, m) for m in messages)
            finished, _ = wait(running)
            collect(finished)
        return self.outcomes

    # --- one message -----------------------------------------------------------------------------

    def handle(self, message: dict[str, Any]) -> Outcome:
        mid, receipt, body = message["MessageId"], message["ReceiptHandle"], message.get("Body", "")
        try:
            events = parse_message(body)
        except EventError as exc:
            return self._dead_letter(message, str(exc))
        ids = [e.id for e in events]
        if self.ready_at is not None:
            waits = max((self.ready_at(e) for e in events if e.status == "firing"), default=0.0) - time.time()
            if waits > 0:  # its data is still arriving: back on the queue until it has
                self._change_visibility(receipt, min(43200, int(math.ceil(waits))))
                log.info("message %s: event(s) %s wait %.0f s more for their data to settle", mid, ", ".join(ids),
                         waits)
                return Outcome(mid, "deferred", ids, f"data settles in {waits:.0f} s")
        with self._lock:  # check and claim at once: two threads never analyse the same event
            todo = [e for e in events if e.status == "firing" and e.id not in self.done
                    and e.id not in self.in_flight]
            self.in_flight.update(e.id for e in todo)
        finished = [e for e in todo if self.is_done(e.id)]
        if finished:
            with self._lock:
                self.in_flight.difference_update(e.id for e in finished)
                self.done.update(e.id for e in finished)
            todo = [e for e in todo if e not in finished]
        leases = self._claim(todo)
        if self.claim is not None:
            elsewhere = [e for e in todo if e.id not in leases]
            if elsewhere:
                with self._lock:
                    self.in_flight.difference_update(e.id for e in elsewhere)
                log.info("message %s: event(s) %s analysed or in flight on another consumer", mid,
                         ", ".join(e.id for e in elsewhere))
            todo = [e for e in todo if e.id in leases]
        if not todo:
            self._delete(receipt)
            result = "resolved" if all(e.status == "resolved" for e in events) else "duplicate"
            log.info("message %s: %s event(s) %s; deleted", mid, result, ", ".join(ids))
            return Outcome(mid, result, ids)
        heartbeat = _Heartbeat(self.sqs, self.queue_url, receipt, self.visibility_s, list(leases.values()))
        self.current.message_id = mid
        self.current.receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        heartbeat.start()
        try:
            for event in todo:
                self.handler(event)
                with self._lock:
                    self.done.add(event.id)
        except Exception as exc:
            heartbeat.stop()
            log.error("message %s: analysis of %s failed (%s: %s); it returns to the queue in %ss",
                      mid, ", ".join(ids), type(exc).__name__, exc, self.retry_after_s)
            self._change_visibility(receipt, self.retry_after_s)
            return Outcome(mid, "failed", ids, f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.stop()
            for lease in leases.values():
                try:
                    lease.release()
                except Exception as exc:  # it expires on its own
                    log.warning("could not release the claim on %s: %s", lease.event_id, exc)
            with self._lock:
                self.in_flight.difference_update(e.id for e in todo)
        self._delete(receipt)
        return Outcome(mid, "analysed", ids)

    def _claim(self, events: list[AnomalyEvent]) -> dict[str, Any]:
        """Leases on the events no other consumer holds and none has finished (checked again once the
        lease is ours: another consumer may have completed and released it just before)."""
        if self.claim is None:
            return {}
        leases = {}
        for event in events:
            lease = self.claim(event.id)
            if lease is None:
                continue
            if self.is_done(event.id):
                lease.release()
                continue
            leases[event.id] = lease
        return leases

    def _dead_letter(self, message: dict[str, Any], reason: str) -> Outcome:
        mid = message["MessageId"]
        if not self.dlq_url:
            log.error("message %s is not a valid event (%s); no DLQ configured, leaving it for the queue's "
                      "RedrivePolicy", mid, reason)
            return Outcome(mid, "failed", [], reason)
        self.sqs.send_message(
            QueueUrl=self.dlq_url, MessageBody=message.get("Body", "") or "<empty>",
            MessageAttributes={
                "baynet-reason": {"DataType": "String", "StringValue": reason[:1000]},
                "baynet-source-message-id": {"DataType": "String", "StringValue": mid},
            },
        )
        self._delete(message["ReceiptHandle"])
        log.warning("message %s moved to the dead-letter queue: %s", mid, reason)
        return Outcome(mid, "dead-lettered", [], reason)

    def _delete(self, receipt: str) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except Exception as exc:  # it comes back after its visibility timeout and is collapsed then
            log.warning("could not delete a handled message (%s); it will be redelivered and collapsed as a "
                        "duplicate", exc)

    def _change_visibility(self, receipt: str, seconds: int) -> None:
        try:
            self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=receipt,
                                               VisibilityTimeout=seconds)
        except Exception as exc:  # the message will come back after its current timeout anyway
            log.warning("could not change visibility: %s", exc)


class _Heartbeat:
    """Extends a message's visibility (and the leases on its events) every half timeout while its
    analysis runs."""

    def __init__(self, sqs: Any, queue_url: str, receipt: str, visibility_s: int, leases: list[Any] = ()):
        self.sqs, self.queue_url, self.receipt, self.visibility_s = sqs, queue_url, receipt, visibility_s
        self.leases = list(leases)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sqs-heartbeat")
        self.beats = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(max(1.0, self.visibility_s / 2)):
            try:
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=self.receipt,
                                                   VisibilityTimeout=self.visibility_s)
                self.beats += 1
            except Exception as exc:
                log.warning("visibility heartbeat failed: %s", exc)
            for lease in self.leases:
                try:
                    lease.renew()
                except Exception as exc:
                    log.warning("claim heartbeat for %s failed: %s", lease.event_id, exc)
