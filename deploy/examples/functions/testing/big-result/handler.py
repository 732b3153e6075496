# entryPoint: handler.handle, runtime: python3.x — returns a string of data.bytes characters (default 1 MiB).
def handle(event, context):
    size = int(((event or {}).get("data") or {}).get("bytes", 1024 * 1024))
    return "x" * size
