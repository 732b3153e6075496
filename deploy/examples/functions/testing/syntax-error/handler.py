# entryPoint: handler.handle, runtime: python3.x — the module has a syntax error (init fails with Runtime.UserCodeSyntaxError).
def handle(event, context)
    return {"ok": True}
