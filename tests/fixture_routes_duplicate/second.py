from core.router import Router

router = Router()
router.on("sensors/+/value", lambda message: None)
