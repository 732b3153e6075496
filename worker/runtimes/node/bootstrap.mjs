#!/usr/bin/env node
// Node.js function runtime for the task service worker.
//
// Implements the client side of the standard AWS Lambda Runtime API
// (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) using only
// the Node.js standard library. The worker starts one process per function
// instance:
//
//     cd $LAMBDA_TASK_ROOT && node /path/to/bootstrap.mjs
//
// Environment:
//   AWS_LAMBDA_RUNTIME_API   host:port of the Runtime API (required)
//   _HANDLER                 entryPoint, "file.export" (required); file may
//                            contain directories ("src/index.handler") and the
//                            export may be nested ("index.handlers.main")
//   LAMBDA_TASK_ROOT         directory with the unpacked code (default: cwd)
//   AWS_LAMBDA_FUNCTION_NAME/_VERSION/_MEMORY_SIZE   exposed on the context
//
// Exit codes: 0 on SIGTERM/SIGINT; 1 when the handler cannot be loaded (after
// POSTing /runtime/init/error) or when the Runtime API becomes unreachable.

import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import util from 'node:util';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const API_VERSION = '2018-06-01';
// Largest response the worker's Runtime API accepts (same 6 MiB limit as AWS Lambda).
const MAX_RESPONSE_BYTES = 6 * 1024 * 1024;
const env = process.env;

// ---------------------------------------------------------------------------
// Signals: exit cleanly.
// ---------------------------------------------------------------------------
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

// ---------------------------------------------------------------------------
// Logging: "<ISO timestamp>\t<requestId>\t<LEVEL>\t<message>", one line per call.
// ---------------------------------------------------------------------------
let currentRequestId = '';
const stdout = process.stdout;
// A closed log pipe must not turn every log call into an uncaught exception.
stdout.on('error', () => {});
process.stderr.on('error', () => {});

function makeLogger(level) {
  return function (...args) {
    const msg = util.format(...args).replace(/\n/g, '\r');
    stdout.write(`${new Date().toISOString()}\t${currentRequestId}\t${level}\t${msg}\n`);
  };
}
console.log = makeLogger('INFO');
console.info = makeLogger('INFO');
console.warn = makeLogger('WARN');
console.error = makeLogger('ERROR');
console.debug = makeLogger('DEBUG');
console.trace = makeLogger('TRACE');
console.fatal = makeLogger('FATAL');

function logErrorLine(prefix, err) {
  let text;
  if (err instanceof Error || (err && typeof err.stack === 'string')) {
    text = `${prefix} ${err.stack}`;
  } else {
    text = `${prefix} ${util.inspect(err)}`;
  }
  console.error(text);
}

// ---------------------------------------------------------------------------
// Runtime API client: one persistent keep-alive HTTP/1.1 connection.
//
// A minimal HTTP/1.1 client on a plain net.Socket (standard library only). It
// is ~2x faster per invocation than node:http with a keep-alive agent and
// handles everything the Runtime API needs: Content-Length and chunked bodies,
// "Connection: close", and transparent reconnection when the worker drops an
// idle connection. Requests are strictly sequential (one in flight).
// ---------------------------------------------------------------------------
const apiAddress = env.AWS_LAMBDA_RUNTIME_API;
if (!apiAddress) {
  process.stderr.write('[ERROR] AWS_LAMBDA_RUNTIME_API is not set\n');
  process.exit(1);
}
const sep = apiAddress.lastIndexOf(':');
const apiHost = (sep > 0 ? apiAddress.slice(0, sep) : apiAddress).replace(/^\[|\]$/g, '');
const apiPort = sep > 0 ? Number(apiAddress.slice(sep + 1)) : 80;
const BASE = `/${API_VERSION}/runtime`;
const NEXT_REQUEST = Buffer.from(
  `GET ${BASE}/invocation/next HTTP/1.1\r\nHost: ${apiAddress}\r\nUser-Agent: task-service-node-runtime\r\n\r\n`,
  'latin1',
);
const CRLFCRLF = Buffer.from('\r\n\r\n');
const EMPTY = Buffer.alloc(0);

class ApiConnectionError extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'ApiConnectionError';
    this.code = code;
  }
}

class RuntimeApiClient {
  constructor() {
    this.socket = null;
    this.buf = EMPTY;
    this.pending = null; // { resolve, reject } of the request in flight
  }

  connect() {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: apiHost, port: apiPort });
      socket.setNoDelay(true);
      const onConnectError = (err) => reject(err);
      socket.once('error', onConnectError);
      socket.once('connect', () => {
        socket.removeListener('error', onConnectError);
        socket.on('error', (err) => this.fail(socket, err));
        socket.on('close', () => this.fail(socket, new ApiConnectionError('Runtime API closed the connection', 'ECONNRESET')));
        socket.on('data', (chunk) => this.onData(chunk));
        this.socket = socket;
        this.buf = EMPTY;
        resolve();
      });
    });
  }

  fail(socket, err) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.buf = EMPTY;
    socket.destroy();
    const p = this.pending;
    this.pending = null;
    if (p) p.reject(err);
  }

  onData(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    if (!this.pending) return;
    let res;
    try {
      res = this.parse();
    } catch (err) {
      this.fail(this.socket, err);
      return;
    }
    if (!res) return; // need more data
    const p = this.pending;
    this.pending = null;
    if (!res.keepAlive) {
      const socket = this.socket;
      this.socket = null;
      this.buf = EMPTY;
      socket.destroy();
    }
    p.resolve(res);
  }

  // Parses one complete response from this.buf; returns undefined if incomplete.
  parse() {
    let buf = this.buf;
    for (;;) {
      const end = buf.indexOf(CRLFCRLF);
      if (end < 0) return undefined;
      const lines = buf.toString('latin1', 0, end).split('\r\n');
      const statusLine = lines[0];
      const status = Number(statusLine.slice(9, 12));
      if (!statusLine.startsWith('HTTP/1.') || !(status >= 100)) {
        throw new ApiConnectionError(`malformed HTTP status line ${JSON.stringify(statusLine)}`, 'EPROTO');
      }
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const line = lines[i];
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      let offset = end + 4;
      if (status >= 100 && status < 200) {
        // interim response (100 Continue): drop it and parse the next one
        buf = buf.subarray(offset);
        this.buf = buf;
        continue;
      }
      let keepAlive = statusLine.startsWith('HTTP/1.1');
      const connection = (headers.connection || '').toLowerCase();
      if (connection.includes('close')) keepAlive = false;
      else if (connection.includes('keep-alive')) keepAlive = true;
      let body;
      if ((headers['transfer-encoding'] || '').toLowerCase().includes('chunked')) {
        const parts = [];
        for (;;) {
          const lineEnd = buf.indexOf('\r\n', offset, 'latin1');
          if (lineEnd < 0) return undefined;
          const size = parseInt(buf.toString('latin1', offset, lineEnd).split(';')[0].trim() || '0', 16);
          if (Number.isNaN(size)) throw new ApiConnectionError('malformed chunk size', 'EPROTO');
          offset = lineEnd + 2;
          if (size === 0) {
            // trailers until an empty line
            for (;;) {
              const tEnd = buf.indexOf('\r\n', offset, 'latin1');
              if (tEnd < 0) return undefined;
              const empty = tEnd === offset;
              offset = tEnd + 2;
              if (empty) break;
            }
            break;
          }
          if (buf.length < offset + size + 2) return undefined;
          parts.push(buf.subarray(offset, offset + size));
          offset += size + 2;
        }
        body = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      } else if (headers['content-length'] !== undefined) {
        const len = Number(headers['content-length']);
        if (buf.length < offset + len) return undefined;
        body = buf.subarray(offset, offset + len);
        offset += len;
      } else if (status === 204 || status === 304) {
        body = EMPTY;
      } else {
        throw new ApiConnectionError('response without Content-Length is not supported', 'EPROTO');
      }
      this.buf = offset === buf.length ? EMPTY : buf.subarray(offset);
      return { status, headers, body, keepAlive };
    }
  }

  async requestOnce(head, body) {
    if (!this.socket) await this.connect();
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      if (body === undefined) this.socket.write(head);
      else if (body.length < 65536) this.socket.write(Buffer.concat([head, body]));
      else {
        this.socket.write(head);
        this.socket.write(body);
      }
    });
  }

  async request(head, body) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.requestOnce(head, body);
      } catch (err) {
        // A dropped keep-alive connection: reconnect and retry (at most twice).
        if (attempt >= 2 || !RETRYABLE.has(err.code)) throw err;
        if (attempt === 1) await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  post(urlPath, payload, errorType) {
    const body = Buffer.from(payload, 'utf8');
    let head = `POST ${urlPath} HTTP/1.1\r\nHost: ${apiAddress}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n`;
    if (errorType !== undefined) head += `Lambda-Runtime-Function-Error-Type: ${headerSafe(errorType)}\r\n`;
    return this.request(Buffer.from(head + '\r\n', 'latin1'), body);
  }
}
const RETRYABLE = new Set(['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ECONNABORTED']);
const client = new RuntimeApiClient();

function headerSafe(s) {
  return String(s).replace(/[^\x20-\x7e]/g, '?');
}

async function postResponse(requestId, payload) {
  const size = Buffer.byteLength(payload);
  // Don't send what the API would refuse.
  const res = size > MAX_RESPONSE_BYTES
    ? { status: 413, body: EMPTY }
    : await client.post(`${BASE}/invocation/${requestId}/response`, payload);
  if (res.status === 413) {
    const error = {
      errorType: 'Function.ResponseSizeTooLarge',
      errorMessage: `Response payload size (${size} bytes) exceeded maximum allowed payload size (${MAX_RESPONSE_BYTES} bytes).`,
      stackTrace: [],
    };
    console.error(`Invoke Error \t${JSON.stringify(error)}`);
    await postError(requestId, error);
  } else if (res.status >= 300) {
    process.stderr.write(
      `[ERROR] Runtime API rejected the response for ${requestId}: HTTP ${res.status} ${res.body.toString().slice(0, 500)}\n`,
    );
  }
}

async function postError(requestId, error) {
  const res = await client.post(`${BASE}/invocation/${requestId}/error`, safeStringify(error), error.errorType);
  if (res.status >= 300) {
    process.stderr.write(
      `[ERROR] Runtime API rejected the error for ${requestId}: HTTP ${res.status} ${res.body.toString().slice(0, 500)}\n`,
    );
  }
}

async function postInitError(error) {
  await client.post(`${BASE}/init/error`, safeStringify(error), error.errorType);
}

function safeStringify(obj) {
  try {
    // Keep error reports far below the Runtime API's payload limit.
    return JSON.stringify({
      errorType: obj.errorType,
      errorMessage: String(obj.errorMessage).slice(0, 65536),
      stackTrace: (obj.stackTrace || []).slice(0, 100).map((l) => String(l).slice(0, 4096)),
    });
  } catch {
    return JSON.stringify({ errorMessage: String(obj.errorMessage), errorType: String(obj.errorType), stackTrace: [] });
  }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------
function toErrorResponse(err) {
  try {
    if (util.types.isNativeError(err) || (err && typeof err.name === 'string' && typeof err.message === 'string')) {
      return {
        errorType: err.name || 'Error',
        errorMessage: err.message,
        stackTrace: stackLines(err.stack),
      };
    }
    let message;
    if (typeof err === 'string') message = err;
    else {
      try { message = JSON.stringify(err); } catch { message = undefined; }
      if (message === undefined) message = String(err);
    }
    return { errorType: 'Error', errorMessage: message, stackTrace: [] };
  } catch {
    return { errorType: 'Error', errorMessage: 'handler failed with an error value that could not be inspected', stackTrace: [] };
  }
}

// Stack lines, without the frames of this bootstrap.
const SELF = import.meta.url;
function stackLines(stack) {
  if (typeof stack !== 'string') return [];
  return stack.split('\n').filter((line) => !line.includes(SELF));
}

function fault(errorType, errorMessage, cause) {
  return { errorType, errorMessage, stackTrace: stackLines(cause && cause.stack) };
}

// ---------------------------------------------------------------------------
// Handler loading (same resolution order as the AWS Node.js runtime).
// ---------------------------------------------------------------------------
const taskRoot = path.resolve(env.LAMBDA_TASK_ROOT || process.cwd());
const userRequire = createRequire(path.join(taskRoot, '__bootstrap__.js'));

function hasFolderPackageJsonTypeModule(folder) {
  for (;;) {
    const pj = path.join(folder, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8')).type === 'module';
      } catch {
        return false;
      }
    }
    const parent = path.dirname(folder);
    if (parent === folder) return false;
    folder = parent;
  }
}

function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

async function loadModule(moduleName) {
  if (moduleName.split(/[\\/]/).includes('..')) {
    throw Object.assign(new Error(`Cannot use relative path in handler module '${moduleName}'`), { code: 'MODULE_NOT_FOUND' });
  }
  const base = path.resolve(taskRoot, moduleName);
  // Extensionless file.
  if (isFile(base)) return base.endsWith('.mjs') ? import(pathToFileURL(base).href) : userRequire(base);
  if (isFile(base + '.js')) {
    // .js is an ES module under a "type": "module" package.json, CommonJS otherwise.
    return hasFolderPackageJsonTypeModule(path.dirname(base))
      ? import(pathToFileURL(base + '.js').href)
      : userRequire(base + '.js');
  }
  if (isFile(base + '.mjs')) return import(pathToFileURL(base + '.mjs').href);
  if (isFile(base + '.cjs')) return userRequire(base + '.cjs');
  // Fall back to node's own resolution (directories with index.js, node_modules, ...).
  let resolved;
  try {
    resolved = userRequire.resolve(moduleName, { paths: [taskRoot] });
  } catch {
    throw Object.assign(
      new Error(`Cannot find module '${moduleName}' in ${taskRoot} (tried .js, .mjs, .cjs)`),
      { code: 'MODULE_NOT_FOUND' },
    );
  }
  return resolved.endsWith('.mjs') ? import(pathToFileURL(resolved).href) : userRequire(resolved);
}

class InitError extends Error {
  constructor(error) {
    super(error.errorMessage);
    this.error = error;
  }
}

async function loadHandler(handlerString) {
  const match = /^([^.]*)\.(.*)$/.exec(handlerString || '');
  if (!match || !match[1] || !match[2]) {
    throw new InitError(fault('Runtime.MalformedHandlerName', `Bad handler '${handlerString}'`));
  }
  const [, moduleName, exportPath] = match;
  let mod;
  try {
    mod = await loadModule(moduleName);
  } catch (err) {
    if (err instanceof SyntaxError) {
      throw new InitError(fault('Runtime.UserCodeSyntaxError', `${err.name}: ${err.message}`, err));
    }
    if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
      const message = String(err.message).replace(/\n- [^\n]*__bootstrap__\.js/, '');
      throw new InitError(fault('Runtime.ImportModuleError', `Error: ${message}`, err.requireStack ? err : null));
    }
    const e = toErrorResponse(err);
    throw new InitError({
      errorType: 'Runtime.ImportModuleError',
      errorMessage: `Unable to import module '${moduleName}': ${e.errorType}: ${e.errorMessage}`,
      stackTrace: e.stackTrace,
    });
  }
  let fn = mod;
  for (const part of exportPath.split('.')) {
    fn = fn == null ? undefined : fn[part];
  }
  // CommonJS modules loaded through import() expose module.exports as `default`.
  if (typeof fn !== 'function' && mod && mod.default != null && typeof mod.default === 'object') {
    let alt = mod.default;
    for (const part of exportPath.split('.')) alt = alt == null ? undefined : alt[part];
    if (typeof alt === 'function') fn = alt;
  }
  if (fn === undefined) {
    throw new InitError(fault('Runtime.HandlerNotFound', `${handlerString} is undefined or not exported`));
  }
  if (typeof fn !== 'function') {
    throw new InitError(fault('Runtime.HandlerNotFound', `${handlerString} is not a function`));
  }
  return fn;
}

// ---------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------
const functionName = env.AWS_LAMBDA_FUNCTION_NAME || '';
const functionVersion = env.AWS_LAMBDA_FUNCTION_VERSION || '$LATEST';
const memoryLimitInMB = env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || '';
const logGroupName = env.AWS_LAMBDA_LOG_GROUP_NAME || '';
const logStreamName = env.AWS_LAMBDA_LOG_STREAM_NAME || '';

function parseJsonHeader(value) {
  if (!value) return undefined;
  return JSON.parse(value);
}

// ---------------------------------------------------------------------------
// Invocation
// ---------------------------------------------------------------------------
let activeInvocation = null; // { finish(err, result) } while a handler runs

function invoke(handler, event, context) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (err, result) => {
      if (done) return;
      done = true;
      activeInvocation = null;
      resolve({ err, result });
    };
    activeInvocation = { finish };
    const callback = (err, result) => {
      if (err !== null && err !== undefined) finish({ value: err }, undefined);
      else finish(null, result);
    };
    context.done = callback;
    context.succeed = (result) => finish(null, result);
    context.fail = (err) => finish({ value: err ?? 'handled' }, undefined);
    let ret;
    try {
      ret = handler(event, context, callback);
    } catch (err) {
      finish({ value: err }, undefined);
      return;
    }
    if (ret && typeof ret.then === 'function') {
      ret.then((result) => finish(null, result), (err) => finish({ value: err }, undefined));
    } else if (handler.length < 3) {
      // Synchronous handler without a callback parameter: its return value is the result.
      finish(null, ret);
    }
    // else: callback-style handler; wait for callback / context.done.
  });
}

// Errors escaping the handler asynchronously fail the current invocation
// instead of killing the process.
process.on('uncaughtException', (err) => {
  logErrorLine('Uncaught Exception', err);
  if (activeInvocation) activeInvocation.finish({ value: err }, undefined);
});
process.on('unhandledRejection', (reason) => {
  logErrorLine('Unhandled Promise Rejection', reason);
  if (activeInvocation) {
    const e = toErrorResponse(reason);
    activeInvocation.finish({ response: { ...e, errorType: 'Runtime.UnhandledPromiseRejection', errorMessage: `${e.errorType}: ${e.errorMessage}` } }, undefined);
  }
});

async function main() {
  let handler;
  try {
    handler = await loadHandler(env._HANDLER);
  } catch (err) {
    const error = err instanceof InitError ? err.error : toErrorResponse(err);
    console.error(`${error.errorType}: ${error.errorMessage}`);
    try {
      await postInitError(error);
    } catch (postErr) {
      process.stderr.write(`[ERROR] could not report init error: ${postErr}\n`);
    }
    process.exit(1);
  }

  for (;;) {
    let next;
    try {
      next = await client.request(NEXT_REQUEST);
      if (next.status === 410) process.exit(0); // the worker is retiring this process
      if (next.status !== 200) throw new Error(`Runtime API /next returned HTTP ${next.status}`);
    } catch (err) {
      process.stderr.write(`[ERROR] Runtime API unavailable: ${err}\n`);
      process.exit(1);
    }
    const h = next.headers;
    const requestId = h['lambda-runtime-aws-request-id'] || '';
    currentRequestId = requestId;
    const traceId = h['lambda-runtime-trace-id'];
    if (traceId) env._X_AMZN_TRACE_ID = traceId;
    else if (env._X_AMZN_TRACE_ID !== undefined) delete env._X_AMZN_TRACE_ID;
    const deadline = Number(h['lambda-runtime-deadline-ms']) || 0;

    let event;
    let context;
    try {
      event = next.body.length ? JSON.parse(next.body.toString('utf8')) : null;
      context = {
        callbackWaitsForEmptyEventLoop: true,
        functionName,
        functionVersion,
        memoryLimitInMB,
        logGroupName,
        logStreamName,
        invokedFunctionArn: h['lambda-runtime-invoked-function-arn'] || '',
        awsRequestId: requestId,
        clientContext: parseJsonHeader(h['lambda-runtime-client-context']),
        identity: parseJsonHeader(h['lambda-runtime-cognito-identity']),
        getRemainingTimeInMillis: () => (deadline ? Math.max(deadline - Date.now(), 0) : 2147483647),
      };
    } catch (err) {
      const error = fault('Runtime.UnmarshalError', `Unable to parse event: ${err.message}`, err);
      console.error(`${error.errorType}: ${error.errorMessage}`);
      await postError(requestId, error);
      continue;
    }

    const { err, result } = await invoke(handler, event, context);
    if (err) {
      const error = err.response || toErrorResponse(err.value);
      console.error(`Invoke Error \t${JSON.stringify(error)}`);
      await postError(requestId, error);
      continue;
    }
    let payload;
    try {
      payload = JSON.stringify(result === undefined ? null : result);
      if (payload === undefined) payload = 'null'; // e.g. a function or symbol
    } catch (e) {
      const error = fault('Runtime.MarshalError', `Unable to stringify response body: ${e.message}`);
      console.error(`Invoke Error \t${JSON.stringify(error)}`);
      await postError(requestId, error);
      continue;
    }
    await postResponse(requestId, payload);
  }
}

main().catch((err) => {
  process.stderr.write(`[ERROR] runtime failure: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
