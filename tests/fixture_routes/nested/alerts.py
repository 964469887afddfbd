"""A route module inside a sub-package."""

from core.message import Message
from core.router import Router

router = Router()


@router.on("alerts/#")
def alert(message: Message) -> None:
    return None
