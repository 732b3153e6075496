# entryPoint: handler.handle, runtime: python3.x — allocates data.megabytes MB, touching every page, and holds it (optionally data.holdSeconds).
import logging
import time

logger = logging.getLogger("alloc")
PAGE = 4096
_held = []  # kept alive across invocations of this process until the next call


def _rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def handle(event, context):
    data = (event or {}).get("data") or {}
    megabytes = int(data.get("megabytes", 16))
    _held.clear()
    logger.info("allocating %d MB", megabytes)
    for _ in range(megabytes):
        chunk = bytearray(1024 * 1024)
        chunk[::PAGE] = b"\x01" * len(range(0, len(chunk), PAGE))  # write every page so it is really resident
        _held.append(chunk)
    rss = _rss_mb()
    logger.info("allocated %d MB, rss %s MB", megabytes, rss)
    hold = float(data.get("holdSeconds", 0))
    if hold > 0:
        time.sleep(hold)
    return {"allocatedMb": megabytes, "rssMb": rss}
