# entryPoint: handler.handle, runtime: python3.x — sleeps data.seconds (default 1), logs before and after, returns the seconds.
import logging
import time

logger = logging.getLogger("sleep")


def handle(event, context):
    seconds = float(((event or {}).get("data") or {}).get("seconds", 1))
    logger.info("sleeping %s seconds", seconds)
    time.sleep(seconds)
    logger.info("woke up after %s seconds", seconds)
    return seconds
