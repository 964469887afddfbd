"""A helper module without a router: discovery must import it and skip it."""

IMPORTED = True
