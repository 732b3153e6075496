// entryPoint: index.handler, runtime: nodejs20.x (ES module) — deletes a deleted user's data in a third-party system.
//
// Triggered by the `user_deleted` platform event (user id in task.data.event.content.id)
// or created by hand with task.data.userId.
//
// Environment:
//   THIRD_PARTY_API_URL    base URL of the third-party API (required)
//   THIRD_PARTY_API_TOKEN  bearer token (optional)
//   THIRD_PARTY_TIMEOUT_MS request timeout (optional, default 10000)
//
// Sends DELETE {THIRD_PARTY_API_URL}/users/{userId}. 2xx = deleted, 404 = already deleted.
// A 5xx answer or a network failure throws an error named "ThirdPartyUnavailable" so a task
// retry policy can target it; any other status throws "ThirdPartyRejected".

export class ThirdPartyUnavailable extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'ThirdPartyUnavailable';
  }
}

export class ThirdPartyRejected extends Error {
  constructor(message) {
    super(message);
    this.name = 'ThirdPartyRejected';
  }
}

export class InvalidTask extends Error {
  constructor(message) {
    super(message);
    this.name = 'InvalidTask';
  }
}

function userIdFrom(task) {
  const data = (task && task.data) || {};
  const id = data.event?.content?.id ?? data.userId;
  if (typeof id !== 'string' || id.length === 0) {
    throw new InvalidTask('no user id: expected task.data.event.content.id or task.data.userId');
  }
  return id;
}

export async function handler(task, context) {
  const userId = userIdFrom(task);
  const baseUrl = process.env.THIRD_PARTY_API_URL;
  if (!baseUrl) throw new InvalidTask('THIRD_PARTY_API_URL is not configured');

  const url = `${baseUrl.replace(/\/+$/, '')}/users/${encodeURIComponent(userId)}`;
  const headers = { Accept: 'application/json' };
  if (process.env.THIRD_PARTY_API_TOKEN) headers.Authorization = `Bearer ${process.env.THIRD_PARTY_API_TOKEN}`;

  // Never outlive the task: stop a little before the invocation deadline.
  const configured = Number(process.env.THIRD_PARTY_TIMEOUT_MS) || 10000;
  const remaining = context?.getRemainingTimeInMillis ? context.getRemainingTimeInMillis() - 500 : configured;
  const timeoutMs = Math.max(100, Math.min(configured, remaining));

  console.log(`deleting user ${userId} at ${url}`);
  let response;
  try {
    response = await fetch(url, { method: 'DELETE', headers, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const reason = err?.cause?.code || err?.name || 'error';
    throw new ThirdPartyUnavailable(`DELETE ${url} failed: ${reason}: ${err?.cause?.message || err.message}`, { cause: err });
  }
  // Drain the body so the connection can be reused.
  const body = await response.text().catch(() => '');

  if (response.status >= 500) {
    throw new ThirdPartyUnavailable(`DELETE ${url} returned ${response.status}: ${body.slice(0, 200)}`);
  }
  if (response.status === 404) {
    console.log(`user ${userId} not found in the third-party system: already deleted`);
  } else if (response.ok) {
    console.log(`user ${userId} deleted from the third-party system (HTTP ${response.status})`);
  } else {
    throw new ThirdPartyRejected(`DELETE ${url} returned ${response.status}: ${body.slice(0, 200)}`);
  }
  return { userId, deleted: true, thirdPartyStatus: response.status };
}
