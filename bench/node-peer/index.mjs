// The seed's ingest, written the usual Node.js way: HMAC check, conditional put, SQS send.
// Used only by `make bench` to put clayhook's figures beside a peer's.
import { createHmac, createHash, timingSafeEqual } from "node:crypto";
import { DynamoDBClient, PutItemCommand, UpdateItemCommand, DeleteItemCommand } from "@aws-sdk/client-dynamodb";
import { SQSClient, SendMessageCommand } from "@aws-sdk/client-sqs";

const secrets = (process.env.CLAY_WEBHOOK_SECRETS || "").split(",").map((s) => s.trim()).filter(Boolean);
if (secrets.length === 0) throw new Error("CLAY_WEBHOOK_SECRETS is empty");
const table = process.env.IDEMPOTENCY_TABLE;
const queueUrl = process.env.LEAD_QUEUE_URL;
const ddb = new DynamoDBClient({});
const sqs = new SQSClient({});
const api = `http://${process.env.AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation`;

const json = (statusCode, body) => ({ statusCode, headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

function authorized(headers, raw) {
  const sig = headers["x-clay-signature"] || "";
  const bearer = (headers["authorization"] || "").replace(/^Bearer\s+/i, "");
  for (const s of secrets) {
    const hex = createHmac("sha256", s).update(raw).digest("hex");
    for (const cand of [sig.replace(/^sha256=/, ""), sig, bearer]) {
      for (const want of [hex, s]) {
        const a = Buffer.from(cand), b = Buffer.from(want);
        if (a.length === b.length && a.length > 0 && timingSafeEqual(a, b)) return true;
      }
    }
  }
  return false;
}

async function handle(event, deadlineMs) {
  const raw = event.isBase64Encoded ? Buffer.from(event.body || "", "base64") : Buffer.from(event.body || "", "utf8");
  const headers = Object.fromEntries(Object.entries(event.headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
  if (raw.length > 262144) return json(413, { error: { code: "payload_too_large" } });
  if (!/^application\/([a-z.+-]*\+)?json/i.test(headers["content-type"] || "")) return json(415, { error: { code: "unsupported_media_type" } });
  if (!authorized(headers, raw)) return json(401, { error: { code: "unauthorized" } });
  let lead;
  try { lead = JSON.parse(raw.toString("utf8")); } catch { return json(400, { error: { code: "invalid_json" } }); }
  if (lead === null || typeof lead !== "object" || Array.isArray(lead)) return json(400, { error: { code: "invalid_json" } });
  const id = createHash("sha256").update(raw).digest("hex");
  const now = Date.now();
  const pk = `ingest#${id}`;
  try {
    await ddb.send(new PutItemCommand({
      TableName: table,
      Item: { pk: { S: pk }, status: { S: "IN_PROGRESS" }, expires_at: { N: String(Math.floor(now / 1000) + 86400) }, in_progress_expires_at: { N: String(deadlineMs) } },
      ConditionExpression: "attribute_not_exists(#pk) OR #exp < :now OR (#status = :ip AND #ipexp < :now_ms)",
      ExpressionAttributeNames: { "#pk": "pk", "#exp": "expires_at", "#status": "status", "#ipexp": "in_progress_expires_at" },
      ExpressionAttributeValues: { ":now": { N: String(Math.floor(now / 1000)) }, ":now_ms": { N: String(now) }, ":ip": { S: "IN_PROGRESS" } },
      ReturnValuesOnConditionCheckFailure: "ALL_OLD",
    }));
  } catch (e) {
    if (e.name === "ConditionalCheckFailedException") {
      const item = e.Item || {};
      if (item.status?.S === "COMPLETED") return json(200, { status: "duplicate", id, message_id: item.message_id?.S });
      return json(409, { error: { code: "in_progress" } });
    }
    return json(503, { error: { code: "unavailable" } });
  }
  const envelope = { version: 1, id, received_at: new Date(now).toISOString(), source: null, lead };
  let messageId;
  try {
    messageId = (await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify(envelope) }))).MessageId;
  } catch {
    await ddb.send(new DeleteItemCommand({ TableName: table, Key: { pk: { S: pk } } })).catch(() => {});
    return json(503, { error: { code: "unavailable" } });
  }
  await ddb.send(new UpdateItemCommand({
    TableName: table, Key: { pk: { S: pk } },
    UpdateExpression: "SET #status = :done, message_id = :mid",
    ExpressionAttributeNames: { "#status": "status" },
    ExpressionAttributeValues: { ":done": { S: "COMPLETED" }, ":mid": { S: messageId } },
  })).catch(() => {});
  return json(202, { status: "accepted", id, message_id: messageId });
}

for (;;) {
  const next = await fetch(`${api}/next`);
  const requestId = next.headers.get("lambda-runtime-aws-request-id");
  const deadline = Number(next.headers.get("lambda-runtime-deadline-ms"));
  const event = await next.json();
  let result;
  try { result = await handle(event, deadline); } catch (e) { result = json(500, { error: { code: "internal" } }); }
  await fetch(`${api}/${requestId}/response`, { method: "POST", body: JSON.stringify(result) });
}
