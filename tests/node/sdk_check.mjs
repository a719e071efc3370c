// The official openai Node SDK against a live batchsite, as a user runs it.
// Usage: node sdk_check.mjs BASE_URL API_KEY INPUT_JSONL MODEL
// Checks with node:assert and exits non-zero on the first failure; prints a JSON summary.
import assert from "node:assert/strict";
import fs from "node:fs";
import OpenAI, { toFile } from "openai";

const [baseURL, apiKey, inputPath, model] = process.argv.slice(2);
const sent = [];
const client = new OpenAI({
  baseURL,
  apiKey,
  // The SDK's default retries (2), counting what it sends: a final refusal must go once.
  fetch: (url, init) => {
    sent.push(`${init?.method ?? "GET"} ${new URL(url).pathname}`);
    return fetch(url, init);
  },
});
const ENDED = new Set(["completed", "failed", "expired", "cancelled"]);
const summary = {};

// The documented upload: a stream, which the SDK sends with Transfer-Encoding: chunked.
const streamed = await client.files.create({ file: fs.createReadStream(inputPath), purpose: "batch" });
assert.equal(streamed.object, "file");
assert.equal(streamed.purpose, "batch");
assert.equal(streamed.bytes, fs.statSync(inputPath).size);
assert.match(streamed._request_id ?? "", /^req_[0-9a-f]{32}$/);
const fromBuffer = await client.files.create({
  file: await toFile(fs.readFileSync(inputPath), "again.jsonl"),
  purpose: "batch",
});
assert.equal(fromBuffer.filename, "again.jsonl");
assert.equal(await (await client.files.content(fromBuffer.id)).text(), fs.readFileSync(inputPath, "utf8"));

const batch = await client.batches.create({
  input_file_id: streamed.id,
  endpoint: "/v1/chat/completions",
  completion_window: "24h",
  metadata: { client: "node" },
});
assert.equal(batch.status, "in_progress");
assert.deepEqual(batch.metadata, { client: "node" });
const toCancel = await client.batches.create({
  input_file_id: fromBuffer.id,
  endpoint: "/v1/chat/completions",
  completion_window: "24h",
});
const cancelled = await client.batches.cancel(toCancel.id);
assert.ok(["cancelling", "cancelled"].includes(cancelled.status), cancelled.status);

// Paging: limit 1 walks every batch through `after`.
const page = await client.batches.list({ limit: 1 });
assert.equal(page.data.length, 1);
assert.equal(page.has_more, true);
const all = [];
for await (const b of client.batches.list({ limit: 1 })) all.push(b.id);
assert.deepEqual(all, [toCancel.id, batch.id]);

let done = batch;
const deadline = Date.now() + 300_000;
while (!ENDED.has(done.status)) {
  assert.ok(Date.now() < deadline, "the batch did not end in time");
  await new Promise((r) => setTimeout(r, 500));
  done = await client.batches.retrieve(batch.id);
}
assert.equal(done.status, "completed");
const output = (await (await client.files.content(done.output_file_id)).text()).trim().split("\n").map(JSON.parse);
const errors = (await (await client.files.content(done.error_file_id)).text()).trim().split("\n").map(JSON.parse);
for (const line of output) assert.equal(line.response.body.object, "chat.completion");
for (const line of errors) {
  const error = line.response.body.error;
  assert.equal(line.response.status_code, 400);
  assert.equal(error.type, "invalid_request_error");
  assert.ok(error.code === null || typeof error.code === "string", `code ${error.code}`);
  assert.equal(typeof error.message, "string");
}
const errorFile = await client.files.retrieve(done.error_file_id);
assert.equal(errorFile.purpose, "batch_output");
summary.output = output.map((l) => l.custom_id).sort();
summary.errors = errors.map((l) => l.custom_id).sort();

// Error shapes: typed errors with OpenAI's fields and the request id; no pointless retries.
sent.length = 0;
try {
  await client.batches.cancel(done.id);
  assert.fail("cancelling a completed batch must fail");
} catch (e) {
  assert.ok(e instanceof OpenAI.ConflictError, String(e));
  assert.equal(e.status, 409);
  assert.equal(e.code, "batch_not_cancellable");
  assert.equal(e.headers.get("x-should-retry"), "false");
  assert.match(e.requestID ?? "", /^req_[0-9a-f]{32}$/);
}
assert.deepEqual(sent, [`POST /v1/batches/${done.id}/cancel`]);
try {
  await client.batches.retrieve("batch_nope");
  assert.fail("unknown batch");
} catch (e) {
  assert.ok(e instanceof OpenAI.NotFoundError, String(e));
  assert.equal(e.code, "not_found");
}
try {
  await client.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }] });
  assert.fail("online chat is not served");
} catch (e) {
  assert.ok(e instanceof OpenAI.NotFoundError, String(e));
  assert.equal(e.code, "unknown_url");
  assert.match(e.message, /\/v1\/batches/);
}
try {
  await new OpenAI({ baseURL, apiKey: "bs-wrong", maxRetries: 0 }).batches.list();
  assert.fail("a wrong key");
} catch (e) {
  assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
}
summary.ok = true;
console.log(JSON.stringify(summary));
