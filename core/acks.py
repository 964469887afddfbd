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
        self._lock = threading.Lock()
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
            order = self._order
            head = self._head
            while head < len(order) and order[head].done:
                head_ticket = order[head]
                # Under the lock: a reconnect cannot slip between the check and the send.
                self._send_ack(head_ticket.mid, head_ticket.qos)
                head += 1
            self.acked += head - self._head
            if head == len(order):
                order.clear()
                head = 0
            elif head > len(order) // 2:
                del order[:head]
                head = 0
            self._head = head

    def new_connection(self) -> None:
        """Forget every unacknowledged ticket: their packet ids belonged to the old connection.

        Call it from the disconnect callback, before the client reconnects.
        """
        with self._lock:
            self.dropped += len(self._order) - self._head
            self._order = []
            self._head = 0
            self._generation += 1

    @property
    def pending(self) -> int:
        """Tickets taken and not yet acknowledged on this connection."""
        with self._lock:
            return len(self._order) - self._head
