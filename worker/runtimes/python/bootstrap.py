#!/usr/bin/env python3
"""Python function runtime for the task service worker.

Implements the client side of the standard AWS Lambda Runtime API
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) using only the
standard library. The worker starts one process per function instance:

    cd $LAMBDA_TASK_ROOT && python3 /path/to/bootstrap.py

Environment:
    AWS_LAMBDA_RUNTIME_API           host:port of the Runtime API (required)
    _HANDLER                         entryPoint, "module.function" (required)
    LAMBDA_TASK_ROOT                 directory with the unpacked code (default: cwd)
    AWS_LAMBDA_FUNCTION_NAME/_VERSION/_MEMORY_SIZE   exposed on the context object
    AWS_LAMBDA_LOG_LEVEL             optional root logger level (default INFO)

Exit codes: 0 on SIGTERM/SIGINT; 1 when the handler cannot be loaded (after
POSTing /runtime/init/error) or when the Runtime API becomes unreachable.
"""

import signal
import sys


def _on_signal(signum, frame):
    raise SystemExit(0)


# Installed before anything else so that an early SIGTERM also exits cleanly.
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)

import importlib  # noqa: E402
import json
import logging
import os
import select
import socket
import time
import traceback

API_VERSION = "2018-06-01"
# Largest response the worker's Runtime API accepts (same 6 MiB limit as AWS Lambda).
MAX_RESPONSE_BYTES = 6 * 1024 * 1024


# --------------------------------------------------------------------------
# Runtime API client: one persistent keep-alive HTTP/1.1 connection.
#
# A minimal HTTP/1.1 client on a plain socket (standard library only). It is
# ~2x faster per invocation than http.client (whose header parsing goes through
# the email package) and handles everything the Runtime API needs:
# Content-Length and chunked bodies, "Connection: close", and transparent
# reconnection when the worker drops an idle connection.
# --------------------------------------------------------------------------
class ApiConnectionError(ConnectionError):
    pass


class RuntimeApiClient:
    def __init__(self, address, wakeup_fd=None):
        host, _, port = address.rpartition(":")
        if not host:
            host, port = address, "80"
        self.host = host.strip("[]")
        self.port = int(port)
        self.sock = None
        self.buf = bytearray()
        # Received into one reusable buffer: a fresh 256 KiB bytes object per recv() is
        # mapped and unmapped by the allocator every time.
        self.chunk = bytearray(262144)
        self.chunk_view = memoryview(self.chunk)
        # A signal arriving just before a blocking recv() would not interrupt it
        # and its Python handler would never run. So wait with poll() on the
        # socket *and* the signal wakeup fd (see signal.set_wakeup_fd).
        self.poller = select.poll()
        self.wakeup_fd = wakeup_fd
        if wakeup_fd is not None:
            self.poller.register(wakeup_fd, select.POLLIN)
        base = "/%s/runtime" % API_VERSION
        self.invocation_base = base + "/invocation/"
        self.init_error_path = base + "/init/error"
        self.host_header = ("Host: %s\r\n" % address).encode("latin-1")
        self.next_request = (("GET %s/invocation/next HTTP/1.1\r\n" % base).encode("latin-1")
                             + self.host_header + b"User-Agent: task-service-python-runtime\r\n\r\n")

    # -- connection -------------------------------------------------------
    def _connect(self):
        sock = socket.create_connection((self.host, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = bytearray()
        self.poller.register(sock, select.POLLIN)

    def close(self):
        if self.sock is not None:
            try:
                self.poller.unregister(self.sock)
            except (KeyError, ValueError, OSError):
                pass
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = bytearray()

    def _fill(self):
        if self.wakeup_fd is not None:
            while True:
                ready = self.poller.poll()
                sock_ready = False
                for fd, _ in ready:
                    if fd == self.wakeup_fd:
                        try:
                            os.read(fd, 4096)  # drain; the pending signal handler runs right after
                        except OSError:
                            pass
                    else:
                        sock_ready = True
                if sock_ready:
                    break
        n = self.sock.recv_into(self.chunk)
        if not n:
            raise ApiConnectionError("Runtime API closed the connection")
        self.buf += self.chunk_view[:n]

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _read_line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill()

    def _read_response(self):
        while True:
            while True:
                i = self.buf.find(b"\r\n\r\n")
                if i >= 0:
                    break
                self._fill()
            head = bytes(self.buf[:i]).decode("latin-1")
            del self.buf[:i + 4]
            lines = head.split("\r\n")
            status_line = lines[0].split(" ", 2)
            try:
                version, status = status_line[0], int(status_line[1])
            except (IndexError, ValueError):
                raise ApiConnectionError("malformed HTTP status line %r" % lines[0])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:
                continue  # interim response (100 Continue)
            break
        keep_alive = version == "HTTP/1.1"
        connection = headers.get("connection", "").lower()
        if "close" in connection:
            keep_alive = False
        elif "keep-alive" in connection:
            keep_alive = True
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(self._read_line().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self._read_line():
                        pass  # trailers
                    break
                parts.append(self._read_exact(size))
                self._read_line()
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]))
        elif status in (204, 304):
            body = b""
        else:  # body delimited by connection close
            try:
                while True:
                    self._fill()
            except ApiConnectionError:
                pass
            body = bytes(self.buf)
            keep_alive = False
        if not keep_alive:
            self.close()
        return status, headers, body

    def _roundtrip(self, request, body=b""):
        """Send one request; on a dropped connection reconnect and retry (twice at most)."""
        for attempt in (0, 1, 2):
            try:
                if self.sock is None:
                    self._connect()
                if len(body) < 65536:
                    self.sock.sendall(request + body)
                else:
                    self.sock.sendall(request)
                    self.sock.sendall(body)
                return self._read_response()
            except (ConnectionError, OSError):
                self.close()
                if attempt == 2:
                    raise
                if attempt == 1:
                    time.sleep(0.05)

    def _post(self, path, body, error_type=None):
        head = "POST %s HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (path, len(body))
        if error_type:
            head += "Lambda-Runtime-Function-Error-Type: %s\r\n" % _header_value(error_type)
        return self._roundtrip(head.encode("latin-1") + self.host_header + b"\r\n", body)

    # -- Runtime API ------------------------------------------------------
    def wait_next(self):
        status, headers, body = self._roundtrip(self.next_request)
        if status == 410:
            raise SystemExit(0)  # the worker is retiring this process
        if status != 200:
            raise ApiConnectionError("Runtime API /next returned HTTP %d: %r" % (status, body[:200]))
        return headers, body

    def post_response(self, request_id, payload):
        if len(payload) > MAX_RESPONSE_BYTES:
            status, body = 413, b""  # don't send what the API would refuse
        else:
            status, _, body = self._post(self.invocation_base + request_id + "/response", payload)
        if status == 413:
            error = {"errorMessage": "Response payload size (%d bytes) exceeded maximum allowed payload size (%d bytes)."
                                     % (len(payload), MAX_RESPONSE_BYTES),
                     "errorType": "Function.ResponseSizeTooLarge", "stackTrace": []}
            _log_error(error)
            self.post_error(request_id, error)
        elif status >= 300:
            _stderr_line("[ERROR] Runtime API rejected the response for %s: HTTP %d %s"
                         % (request_id, status, body[:500].decode("utf-8", "replace")))

    def post_error(self, request_id, error):
        status, _, body = self._post(self.invocation_base + request_id + "/error",
                                     _error_body(error), error["errorType"])
        if status >= 300:
            _stderr_line("[ERROR] Runtime API rejected the error for %s: HTTP %d %s"
                         % (request_id, status, body[:500].decode("utf-8", "replace")))

    def post_init_error(self, error):
        self._post(self.init_error_path, _error_body(error), error["errorType"])


def _header_value(value):
    return "".join(c if " " <= c <= "~" else "?" for c in str(value))


def _error_body(error):
    # Keep error reports far below the Runtime API's payload limit.
    error = dict(error)
    error["errorMessage"] = str(error.get("errorMessage", ""))[:65536]
    error["stackTrace"] = [str(line)[:4096] for line in (error.get("stackTrace") or [])[:100]]
    return json.dumps(error, default=str).encode("utf-8")


def _stderr_line(text):
    try:
        sys.stderr.write(text.replace("\n", "\r") + "\n")
        sys.stderr.flush()
    except Exception:
        pass


# --------------------------------------------------------------------------
# Context object (same attribute names as AWS Lambda's Python runtime).
# --------------------------------------------------------------------------
class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, d):
        self.cognito_identity_id = d.get("cognitoIdentityId")
        self.cognito_identity_pool_id = d.get("cognitoIdentityPoolId")


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, d):
        self.client = d.get("client")
        self.custom = d.get("custom")
        self.env = d.get("env")


class LambdaContext:
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
    function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
    log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")

    def __init__(self, request_id, deadline_ms, invoked_function_arn,
                 client_context=None, identity=None):
        self.aws_request_id = request_id
        self._deadline_ms = deadline_ms
        self.invoked_function_arn = invoked_function_arn
        self.client_context = client_context
        self.identity = identity

    def get_remaining_time_in_millis(self):
        if not self._deadline_ms:
            return 2 ** 31 - 1
        return max(int(self._deadline_ms - time.time() * 1000), 0)

    def __repr__(self):
        return ("LambdaContext([aws_request_id=%s,function_name=%s,function_version=%s,"
                "invoked_function_arn=%s,memory_limit_in_mb=%s])"
                % (self.aws_request_id, self.function_name, self.function_version,
                   self.invoked_function_arn, self.memory_limit_in_mb))


# --------------------------------------------------------------------------
# Logging: "<ISO time>\t<request id>\t<LEVEL>\t<message>", one line per record.
# --------------------------------------------------------------------------
_current_request_id = ""


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _current_request_id
        return True


class _LambdaFormatter(logging.Formatter):
    def formatTime(self, record, datefmt=None):
        return "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
                             record.msecs)

    def format(self, record):
        # Keep multi-line records (tracebacks) on one log line, like Lambda does.
        return super().format(record).replace("\n", "\r")


def _setup_stdio_and_logging():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LambdaFormatter(
        "%(asctime)s\t%(aws_request_id)s\t%(levelname)s\t%(message)s"))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper()
    if level == "TRACE":
        level = "DEBUG"
    elif level == "FATAL":
        level = "CRITICAL"
    try:
        root.setLevel(level)
    except ValueError:
        root.setLevel(logging.INFO)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------
def _format_stack(tb):
    return [line for line in traceback.format_list(traceback.extract_tb(tb))]


def _error_from_exception(exc, error_type=None, tb=None, message=None):
    return {
        "errorMessage": str(exc) if message is None else message,
        "errorType": error_type or type(exc).__name__,
        "stackTrace": _format_stack(tb if tb is not None else exc.__traceback__),
    }


def _log_error(error):
    text = "[ERROR] %s: %s" % (error["errorType"], error["errorMessage"])
    if error.get("stackTrace"):
        text += "\nTraceback (most recent call last):\n" + "".join(error["stackTrace"])
    _stderr_line(text.rstrip("\n"))


class _InitError(Exception):
    def __init__(self, error):
        super().__init__(error["errorMessage"])
        self.error = error


def _load_handler(handler_name, task_root):
    try:
        modname, fname = handler_name.rsplit(".", 1)
        if not modname or not fname:
            raise ValueError("not enough values to unpack")
    except ValueError as e:
        raise _InitError({"errorMessage": "Bad handler '%s': %s" % (handler_name, e),
                          "errorType": "Runtime.MalformedHandlerName", "stackTrace": []})

    # Task root first on sys.path; drop the bootstrap's own directory.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, task_root)

    import_name = modname.replace("/", ".").strip(".")
    if import_name.endswith(".py"):
        import_name = import_name[:-3]
    try:
        module = importlib.import_module(import_name)
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, (e.text or "").rstrip("\n"))]
        raise _InitError({"errorMessage": "Syntax error in module '%s': %s" % (modname, e),
                          "errorType": "Runtime.UserCodeSyntaxError", "stackTrace": trace})
    except ImportError as e:
        raise _InitError(_error_from_exception(
            e, "Runtime.ImportModuleError", e.__traceback__.tb_next,
            "Unable to import module '%s': %s" % (modname, e)))
    except Exception as e:
        raise _InitError(_error_from_exception(
            e, "Runtime.ImportModuleError", e.__traceback__.tb_next,
            "Unable to import module '%s': %s: %s" % (modname, type(e).__name__, e)))

    fn = getattr(module, fname, None)
    if fn is None or not callable(fn):
        raise _InitError({
            "errorMessage": "Handler '%s' missing on module '%s'" % (fname, modname)
            if fn is None else "Handler '%s' on module '%s' is not callable" % (fname, modname),
            "errorType": "Runtime.HandlerNotFound", "stackTrace": []})
    return fn


def _json_default(o):
    if type(o).__name__ == "Decimal" and hasattr(o, "to_integral_value"):  # decimal.Decimal, like Lambda
        return int(o) if o == o.to_integral_value() else float(o)
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


_json_encode = json.JSONEncoder(default=_json_default, allow_nan=False,
                                separators=(",", ":")).encode


# --------------------------------------------------------------------------
# Main loop
# --------------------------------------------------------------------------
def main():
    global _current_request_id
    _setup_stdio_and_logging()

    api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not api:
        _stderr_line("[ERROR] AWS_LAMBDA_RUNTIME_API is not set")
        return 1
    wakeup_fd = None
    try:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        wakeup_fd = rfd
    except (OSError, ValueError, AttributeError):
        pass
    client = RuntimeApiClient(api, wakeup_fd)
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    handler_name = os.environ.get("_HANDLER", "")

    try:
        handler = _load_handler(handler_name, task_root)
    except _InitError as e:
        _log_error(e.error)
        try:
            client.post_init_error(e.error)
        except Exception as post_exc:
            _stderr_line("[ERROR] could not report init error: %r" % (post_exc,))
        return 1

    environ = os.environ
    while True:
        try:
            headers, body = client.wait_next()
        except (OSError, ValueError) as e:
            _stderr_line("[ERROR] Runtime API unavailable: %r" % (e,))
            return 1

        request_id = headers.get("lambda-runtime-aws-request-id", "")
        _current_request_id = request_id
        trace_id = headers.get("lambda-runtime-trace-id")
        if trace_id:
            environ["_X_AMZN_TRACE_ID"] = trace_id
        elif "_X_AMZN_TRACE_ID" in environ:
            del environ["_X_AMZN_TRACE_ID"]
        deadline = headers.get("lambda-runtime-deadline-ms")
        try:
            deadline = int(deadline) if deadline else 0
        except ValueError:
            deadline = 0

        try:
            client_context = headers.get("lambda-runtime-client-context")
            identity = headers.get("lambda-runtime-cognito-identity")
            context = LambdaContext(
                request_id, deadline, headers.get("lambda-runtime-invoked-function-arn", ""),
                ClientContext(json.loads(client_context)) if client_context else None,
                CognitoIdentity(json.loads(identity)) if identity else None)
            event = json.loads(body) if body else None
        except Exception as e:
            error = {"errorMessage": "Unable to unmarshal input: %s" % e,
                     "errorType": "Runtime.UnmarshalError", "stackTrace": []}
            _log_error(error)
            client.post_error(request_id, error)
            continue

        try:
            result = handler(event, context)
        except Exception as e:
            # Skip the bootstrap's own frame in the stack trace.
            error = _error_from_exception(e, tb=e.__traceback__.tb_next)
            _log_error(error)
            client.post_error(request_id, error)
            continue

        try:
            payload = _json_encode(result).encode("utf-8")
        except Exception as e:
            error = {"errorMessage": "Unable to marshal response: %s" % e,
                     "errorType": "Runtime.MarshalError", "stackTrace": []}
            _log_error(error)
            client.post_error(request_id, error)
            continue
        client.post_response(request_id, payload)


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit as e:
        code = e.code
    except (OSError, ValueError) as e:
        _stderr_line("[ERROR] Runtime API unavailable: %r" % (e,))
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    sys.exit(code)
