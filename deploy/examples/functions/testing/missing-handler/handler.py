# entryPoint: handler.handle, runtime: python3.x — the module has no `handle` (init fails with Runtime.HandlerNotFound).
def something_else(event, context):
    return {"ok": True}
