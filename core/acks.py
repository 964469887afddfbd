"""In-order acknowledgements for messages handled out of order.

MQTT requires PUBACKs in the order the PUBLISH packets arrived (MQTT 3.1.1
section 4.6, MQTT 5 section 4.6), but handlers of different topics finish in
any order. `AckSequencer` hands out one ticket per QoS 1 message in arrival
order and sends the acknowledgement of a ticket only once it and every earlier
ticket are done: a handler that has not returned holds back the acks behind it
(so a crash still means redelivery of everything not handled).

Packet ids belong to one network connection. After a disconnect, tickets of
the old connection are never acknowledged: an old id may already name another
message of the new connection. The broker redelivers those messages to a
persistent session (at least once), and a clean session never expected them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

#: Sends one acknowledgement: `(packet id, qos)`; must be safe to call from any thread.
SendAck = Callable[[int, int], object]


class Ticket:
    """One message's place in the acknowledgement order."""

    __slots__ = ("done", "generation", "mid", "qos")

    def __init__(self, mid: int, qos: int, generation: int) -> None:
        self.mid = mid
        self.qos = qos
        self.generation = generation
        self.done = False


class AckSequencer:
    """Releases acknowledgements in arrival order, never across a reconnect."""

    def __init__(self, send_ack: SendAck) -> None:
        self._send_ack = send_ack
        # Re-entrant: a send whose write fails may call `new_connection` on this thread.
        self._lock = threading.RLock()
        self._order: list[Ticket] = []  #: tickets of this connection not yet acked, in order
        self._head = 0  #: index of the first ticket in `_order` not yet acked
        self._generation = 0
        self.acked = 0  #: acknowledgements sent so far
        self.dropped = 0  #: tickets abandoned by a reconnect (redelivered by the broker)

    def take(self, mid: int, qos: int) -> Ticket:
        """A ticket for a message that just arrived (call in arrival order)."""
        with self._lock:
            ticket = Ticket(mid, qos, self._generation)
            self._order.append(ticket)
            return ticket

    def done(self, ticket: Ticket) -> None:
        """Mark `ticket`'s message handled and send every acknowledgement now in order."""
        with self._lock:
            if ticket.generation != self._generation:
                return  # its connection is gone; the broker redelivers or forgot it
            ticket.done = True
            generation = self._generation
            order = self._order
            while self._head < len(order) and order[self._head].done:
                head_ticket = order[self._head]
                # Counted before the send: if the send raises, this ack is not sent again.
                self._head += 1
                self.acked += 1
                # Under the lock: a reconnect cannot slip between the check and the send.
                self._send_ack(head_ticket.mid, head_ticket.qos)
                if self._generation != generation:
                    return  # the send found the connection gone; new_connection() ran
            if self._head == len(order):
                order.clear()
                self._head = 0
            elif self._head > len(order) // 2:
                del order[: self._head]
                self._head = 0

    def new_connection(self) -> None:
        """Forget every unacknowledged ticket: their packet ids belonged to the old connection.

        Call it from the disconnect callback, before the client reconnects.
        """
        with self._lock:
            self.dropped += len(self._order) - self._head
            self._order = []
            self._head = 0
            self._generation += 1

    def is_current(self, ticket: Ticket) -> bool:
        """True while `ticket`'s connection is the live one (its ack can still be sent)."""
        return ticket.generation == self._generation

    @property
    def pending(self) -> int:
        """Tickets taken and not yet acknowledged on this connection."""
        with self._lock:
            return len(self._order) - self._head
