# entryPoint: handler.handle, runtime: python3.x — does nothing, returns {"ok": true}.
def handle(event, context):
    return {"ok": True}
