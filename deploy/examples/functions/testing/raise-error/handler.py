# entryPoint: handler.handle, runtime: python3.x — raises CustomError with the message from data.message.
class CustomError(Exception):
    pass


def handle(event, context):
    message = ((event or {}).get("data") or {}).get("message", "something went wrong")
    raise CustomError(message)
