# entryPoint: handler.handle, runtime: python3.x — prints data.count numbered lines ("line 1" … "line N") to stdout.
def handle(event, context):
    count = int(((event or {}).get("data") or {}).get("count", 10))
    for i in range(1, count + 1):
        print("line %d" % i)
    return {"count": count}
