"""`make sam-local-test`: the `sam local` commands of docs/testing.md, run as written, under Docker.

Runs scripts/sam-local.sh (the one place the commands live): the services `clayhook sam-local`
starts (moto on 0.0.0.0:5000 with the table and queues, the destination printer on :9000, the
queues polled into `sam local start-lambda`), then a real `sam local invoke` of every file in
events/ with the answer each must get, the router's deliveries and the feeder's rows read back
from the printer, and `sam local start-api` answering 202, 200 `duplicate` and 401 — the
accepted lead then routed through start-lambda to the destinations.

Needs Docker, a `sam build` of this machine's architecture (`make sam-build`), and the clayhook
binary (target/debug). SAM_INVOKE_IMAGE names a local base image where the real one cannot be
pulled (`.ci/run` builds a stand-in with scripts/lambda-standin-image.sh).
Exits non-zero on the first failed check.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "sam-local.sh"
LOGS = ROOT / "target" / "sam-local-logs"
TOKEN = "local-dev-token-change-me"
checks = 0


def check(ok, label, detail=""):
    global checks
    if not ok:
        print(f"FAIL {label}" + (f": {detail}" if detail else ""), flush=True)
        raise SystemExit(1)
    checks += 1
    print(f"ok   {label}", flush=True)


def start(name, *args):
    log = open(LOGS / f"{name}.log", "w")
    p = subprocess.Popen([str(SCRIPT), *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    return p


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def wait_for(predicate, seconds, label):
    end = time.time() + seconds
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    check(False, label, "timed out")


def invoke(function, event_path):
    out = subprocess.run([str(SCRIPT), "invoke", function, str(event_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    with open(LOGS / "invokes.log", "a") as log:
        log.write(f"$ invoke {function} {event_path}\n{out.stderr}\n{out.stdout}\n")
    lines = [l for l in out.stdout.splitlines() if l.strip().startswith("{")]
    check(out.returncode == 0 and lines, f"sam local invoke {function} -e {Path(event_path).name} ran",
          out.stderr[-2000:])
    return json.loads(lines[-1])


def deliveries():
    """(destination, lead id or None, body) for every request the printer logged."""
    out = []
    text = (LOGS / "services.log").read_text(errors="replace")
    for line in text.splitlines():
        m = re.match(r"→ (\S+) received(?: \(Idempotency-Key ([0-9a-f]+):\w+\))?: (.*)$", line)
        if m:
            try:
                body = json.loads(m.group(3))
            except json.JSONDecodeError:
                body = m.group(3)
            out.append((m.group(1), m.group(2), body))
    return out


def post(path, body, token):
    req = urllib.request.Request(f"http://127.0.0.1:3000{path}", data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-Clay-Signature": token})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def main():
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / "invokes.log").write_text("")
    started = time.time()
    procs = []
    try:
        services = start("services", "services")
        procs.append(services)
        wait_for(lambda: "services for `sam local` are up" in (LOGS / "services.log").read_text(),
                 60, "clayhook sam-local is up")
        lam = start("start-lambda", "start-lambda")
        procs.append(lam)

        # Every event file, with the answer it must get.
        env = json.loads((ROOT / "events" / "env.json").read_text())
        signed = LOGS / "ingest-standard-webhooks.signed.json"
        sig = subprocess.run([str(ROOT / "target" / "debug" / "clayhook"), "sign-event",
                              "events/ingest-standard-webhooks.json"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "CLAY_WEBHOOK_SECRETS": env["IngestFunction"]["CLAY_WEBHOOK_SECRETS"]})
        check(sig.returncode == 0, "clayhook sign-event re-signs the Standard Webhooks event", sig.stderr)
        signed.write_text(sig.stdout)
        cases = [("events/ingest-static-token.json", 202, "accepted"), ("events/ingest-hmac.json", 202, "accepted"),
                 (str(signed), 202, "accepted"), ("events/ingest-bad-token.json", 401, "unauthorized"),
                 ("events/ingest-not-json.json", 400, "invalid_json"),
                 ("events/ingest-static-token.json", 200, "duplicate")]
        for path, status, what in cases:
            answer = invoke("IngestFunction", ROOT / path if not path.startswith("/") else path)
            body = json.loads(answer.get("body") or "null")
            got = body.get("status") or body.get("error", {}).get("code")
            check(answer.get("statusCode") == status and got == what,
                  f"IngestFunction {Path(path).name}: {status} {what}", json.dumps(answer)[:500])

        batch = json.loads((ROOT / "events" / "router-sqs-batch.json").read_text())
        answer = invoke("RouterFunction", ROOT / "events" / "router-sqs-batch.json")
        # The router knows its DLQ (events/env.json): the malformed record goes there at once,
        # with its reason, and the batch reports nothing failed.
        check(answer == {"batchItemFailures": []},
              "RouterFunction router-sqs-batch.json: nothing fails", json.dumps(answer))
        router_env = env["RouterFunction"]
        dlq = subprocess.run([str(ROOT / "target" / "debug" / "clayhook"), "dlq", "list"], cwd=ROOT,
                             capture_output=True, text=True, env={
                                 **os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_REGION": "us-east-1",
                                 "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                 "DLQ_URL": router_env["LEAD_DLQ_URL"].replace("host.docker.internal", "127.0.0.1"),
                                 "IDEMPOTENCY_TABLE": router_env["IDEMPOTENCY_TABLE"]})
        check(dlq.returncode == 0 and "reason permanent: malformed record" in dlq.stdout,
              "the malformed record is in the DLQ with its reason (clayhook dlq list)", dlq.stdout + dlq.stderr)
        ids = [json.loads(r["body"])["id"] for r in batch["Records"][:2]]

        def routed(lead, name):
            # Webhooks carry `Idempotency-Key: <ID>:<destination>`; Slack shows the name and the
            # ID's first 12 characters (the two sample ids share theirs, their names differ).
            return sorted(d for d, k, b in deliveries()
                          if k == lead or (d == "slack" and f"`{lead[:12]}`" in json.dumps(b)
                                           and f"New lead: {name}" in json.dumps(b)))
        check(routed(ids[0], "Jane Doe") == ["crm", "outreach", "slack", "zapier"],
              "the 92-point lead reached crm, outreach, slack and zapier", routed(ids[0], "Jane Doe"))
        check(routed(ids[1], "Unnamed lead") == ["nurture", "zapier"], "the 64-point lead reached nurture and zapier",
              routed(ids[1], "Unnamed lead"))

        answer = invoke("FeederFunction", ROOT / "events" / "feeder-sqs-batch.json")
        check(answer == {"batchItemFailures": []}, "FeederFunction feeder-sqs-batch.json: no record retried",
              json.dumps(answer))
        rows = [b for d, _, b in deliveries() if d == "clay"]
        check(sorted(r.get("company") for r in rows) == ["Hooli", "Initech"],
              "the two rows reached the local Clay webhook", rows)

        # sam local start-api: the route as Clay calls it.
        api = start("start-api", "start-api")
        procs.append(api)

        def api_up():
            try:
                urllib.request.urlopen("http://127.0.0.1:3000/", timeout=2)
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True
        wait_for(api_up, 120, "sam local start-api listens on :3000")
        lead = json.dumps({"Work Email": "pat@example-sam.com", "First Name": "Pat", "Company": "Initrode",
                           "ICP Score": "95", "Row ID": f"sam-{int(started)}"})
        status, body = post("/api/clay/enriched/sam-local", lead, TOKEN)
        check(status == 202 and body.get("status") == "accepted", "start-api: a new lead is 202 accepted", body)
        status, again = post("/api/clay/enriched/sam-local", lead, TOKEN)
        check(status == 200 and again.get("status") == "duplicate" and again.get("id") == body.get("id"),
              "start-api: the same callback again is 200 duplicate", again)
        status, refused = post("/api/clay/enriched/sam-local", lead, "wrong-token")
        check(status == 401 and refused.get("error", {}).get("code") == "unauthorized",
              "start-api: a wrong token is 401", refused)
        wait_for(lambda: len(routed(body["id"], "Pat")) == 4, 120,
                 "the accepted lead went through the queue and start-lambda to its four destinations")
        check(routed(body["id"], "Pat") == ["crm", "outreach", "slack", "zapier"],
              "start-api lead routed by RouterFunction under start-lambda", routed(body["id"], "Pat"))
    finally:
        for p in reversed(procs):
            stop(p)
        subprocess.run("docker ps -q --filter label=sam.cli.container.type=lambda | xargs -r docker rm -f",
                       shell=True, capture_output=True)
    print(f"sam-local-test: {checks} checks passed in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
