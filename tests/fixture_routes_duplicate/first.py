from core.router import Router

router = Router()
router.on("sensors/{sensor}/value", lambda message: None)
