"""Security checks on template.yaml that cfn-lint does not make.

- No IAM statement allows a wildcard action ("*", "dynamodb:*", "sqs:Get*", ...).
- Every parameter that carries a secret (a token, a secret, a hook URL) is NoEcho.
- Ingest's body limit is wired and can never exceed what fits an SQS message, so the size check
  (which runs before authentication) bounds every body.
- Every queue takes the 1 MiB messages ingest measures envelopes against (MAX_MESSAGE_BYTES), so a
  202 is never followed by a message SQS (or a redrive into a DLQ) refuses.
- The API is throttled (rate and burst from parameters) and writes JSON access logs; ingest's
  concurrency is capped by a parameter.
- Every function and the access logs have a log group kept LogRetentionDays.
- Each function reaches only its own items in the table (dynamodb:LeadingKeys on the prefix
  src/table.rs gives it).
- No secret is in a function's environment: every secret variable (SECRET_VARIABLES in
  src/secret_refs/mod.rs) is a reference to the stack's secret (or the ExistingSecretArn), and
  each function may read that secret only (secretsmanager:GetSecretValue, no other resource).
- Retries over hours agree: the router knows its queue, DLQ and schedule, may change visibility
  and send to the DLQ, the default MaxReceiveCount covers the default RetrySchedule's receives,
  and the lead queue keeps messages at least a day past the schedule.
- Delivery control: the router gets the breaker, rate-limit and archive parameters, may read its
  control items with BatchGetItem, and each destination has a breaker alarm; the dashboard shows
  breakers, holds, rate-limit waits and retry depth.
- The warehouse: the router gets WarehouseS3Uri / FirehoseStreamName, may put objects only under
  that prefix and PutRecordBatch only to that stream (each only when set), and the Glue table's
  partition projection covers source= and date=.
- `--self-test` breaks each of those in a copy of the template and checks that it is caught.
- `cargo lambda build` (sam build) runs without the default `cli` feature, and that build links none of the CLI's crates.
Prints one line per check and "N passed, N failed"; exits non-zero on any failure.
"""

import json
import re
import subprocess
import sys
import tomllib

from cfnlint.decode import cfn_yaml

SECRET_PARAM = re.compile(r"(secret|token|password|webhookurl|key$)", re.IGNORECASE)
NOT_SECRET = {"IdempotencyKey", "ExistingSecretArn", "SecretsRefreshSeconds"}
SQS_MAX = 1048576
# Crates only `clayhook` (the operator CLI) needs; `console` comes with indicatif.
CLI_CRATES = {"clap", "csv", "indicatif", "console"}


def statements(resource):
    props = resource.get("Properties", {})
    for policy in props.get("Policies", []) or []:
        if isinstance(policy, dict):
            for s in policy.get("Statement", []) or []:
                yield s
    doc = props.get("PolicyDocument")
    if isinstance(doc, dict):
        yield from doc.get("Statement", []) or []


# Which key prefix (a constant in src/table.rs) each function's items start with.
FUNCTION_PREFIX = {"IngestFunction": "INGEST_PREFIX", "RouterFunction": "DELIVERY_PREFIX", "FeederFunction": "FEED_PREFIX"}


def table_prefixes():
    text = open("src/table.rs").read()
    return dict(re.findall(r'pub const ([A-Z_]+_PREFIX): &str = "([^"]+)";', text))


def secret_variables():
    text = open("src/secret_refs/mod.rs").read()
    block = text.split("pub const SECRET_VARIABLES: &[&str] = &[", 1)[1].split("];", 1)[0]
    return re.findall(r'"([A-Z_]+)"', block)


# Each function reads its own secret (or the ExistingSecretArn).
OWN_SECRET = {"IngestFunction": "IngestSecrets", "RouterFunction": "RouterSecrets", "FeederFunction": "FeederSecrets"}
# What a parameter going into a secret's JSON must never hold: it would break the JSON.
JSON_BREAKERS = ['a"b', "a\\b", "a\nb", "a\tb", "a\x01b"]


def secret_of(function):
    return {"Fn::If": ["CreateSecret", {"Ref": OWN_SECRET[function]}, {"Ref": "ExistingSecretArn"}]}


def secret_checks(t):
    """Secrets by reference only, each function reading only its own secret, whose JSON holds
    exactly that function's secret variables and cannot be broken by a parameter's value."""
    results = []
    names = secret_variables()
    results.append(("src/secret_refs/mod.rs lists the secret variables", len(names) >= 10, names))
    params = t.get("Parameters", {})
    for name, res in t["Resources"].items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        env = res["Properties"].get("Environment", {}).get("Variables", {})
        held = [v for v in names if v in env]
        results.append((f"{name} holds some secret variable", bool(held), held))
        for var in held:
            want = {"Fn::Sub": [f"${{Secret}}#{var}", {"Secret": secret_of(name)}]}
            results.append((f"{name} {var} is a reference to its own secret", env[var] == want, env[var]))
        reads = [st for st in statements(res) if "secretsmanager:GetSecretValue" in json.dumps(st.get("Action"))]
        results.append((f"{name} may read its own secret and nothing else of Secrets Manager",
                        len(reads) == 1 and reads[0].get("Resource") == secret_of(name)
                        and reads[0].get("Action") == ["secretsmanager:GetSecretValue"], reads))
        secret = t["Resources"].get(OWN_SECRET[name], {})
        body = secret.get("Properties", {}).get("SecretString", {}).get("Fn::Sub", "")
        try:
            keys = set(json.loads(re.sub(r"\$\{[^}]+\}", "x", body)))
        except ValueError:
            keys = set()
        results.append((f"{OWN_SECRET[name]} is a JSON object of exactly {name}'s secret variables",
                        keys == set(held), sorted(keys)))
        for param in re.findall(r"\$\{([^}]+)\}", body):
            pattern = params.get(param, {}).get("AllowedPattern")
            safe = pattern is not None and not any(re.fullmatch(pattern, v) for v in JSON_BREAKERS)
            results.append((f"parameter {param} cannot break {OWN_SECRET[name]}'s JSON", safe, pattern))
    return results


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text):
    text = str(text).strip()
    unit = text[-1] if text[-1] in UNITS else "s"
    return int(text.rstrip("smhd")) * UNITS[unit]


def schedule_receives_and_total(steps, total):
    """As src/delivery/schedule.rs: the listed waits, then the last until the total."""
    waits = [seconds(s) for s in str(steps).split(",") if s.strip()]
    while sum(waits) < seconds(total):
        waits.append(waits[-1])
    return len(waits) + 1, sum(waits)


def retry_checks(t):
    results = []
    params = t.get("Parameters", {})
    resources = t["Resources"]
    router = resources["RouterFunction"]["Properties"]
    env = router["Environment"]["Variables"]
    want = {"LEAD_QUEUE_URL": {"Ref": "LeadQueue"}, "LEAD_DLQ_URL": {"Ref": "LeadDeadLetterQueue"},
            "RETRY_SCHEDULE": {"Ref": "RetrySchedule"}, "RETRY_SCHEDULE_TOTAL": {"Ref": "RetryScheduleTotal"},
            "MAX_RECEIVE_COUNT": {"Ref": "MaxReceiveCount"}}
    for var, value in want.items():
        results.append((f"the router's {var} is {value}", env.get(var) == value, env.get(var)))
    queue = resources["LeadQueue"]["Properties"]
    redrive = queue.get("RedrivePolicy", {})
    results.append(("the lead queue's maxReceiveCount is MaxReceiveCount",
                    redrive.get("maxReceiveCount") == {"Ref": "MaxReceiveCount"}, redrive))
    receives, total = schedule_receives_and_total(params["RetrySchedule"]["Default"], params["RetryScheduleTotal"]["Default"])
    backstop = int(params["MaxReceiveCount"]["Default"])
    results.append((f"the default MaxReceiveCount ({backstop}) covers the default schedule's {receives} receives",
                    backstop >= receives, (backstop, receives)))
    retention = int(queue.get("MessageRetentionPeriod", 345600))
    results.append((f"the lead queue keeps messages a day past the schedule ({total} s)",
                    retention >= total + 86400, retention))
    dlq = int(resources["LeadDeadLetterQueue"]["Properties"].get("MessageRetentionPeriod", 345600))
    results.append(("the DLQ keeps messages as long as the lead queue", dlq >= retention, dlq))
    may = {a: st.get("Resource") for st in statements(resources["RouterFunction"])
           for a in ([st.get("Action")] if isinstance(st.get("Action"), str) else st.get("Action", []))}
    results.append(("the router may change visibility on the lead queue",
                    may.get("sqs:ChangeMessageVisibility") == {"Fn::GetAtt": ["LeadQueue", "Arn"]}, may.get("sqs:ChangeMessageVisibility")))
    results.append(("the router may send to the lead DLQ and the lead queue (and only there)",
                    may.get("sqs:SendMessage") == [{"Fn::GetAtt": ["LeadDeadLetterQueue", "Arn"]},
                                                   {"Fn::GetAtt": ["LeadQueue", "Arn"]}], may.get("sqs:SendMessage")))
    return results + control_checks(t, env, may)


DESTINATIONS = ["crm", "outreach", "nurture", "slack", "zapier", "warehouse"]


def control_checks(t, env, may):
    """Delivery control: the router gets its settings, may read the control items in one call,
    and every destination has a breaker alarm and a place on the dashboard."""
    results = []
    want = {"BREAKER_THRESHOLD": "BreakerThreshold", "BREAKER_COOLDOWN": "BreakerCooldown",
            "BREAKER_MAX_COOLDOWN": "BreakerMaxCooldown", "DESTINATION_RATE_LIMITS": "DestinationRateLimits",
            "ARCHIVE_DAYS": "ArchiveDays"}
    for var, param in want.items():
        results.append((f"the router's {var} is the {param} parameter", env.get(var) == {"Ref": param}, env.get(var)))
    results.append(("the router may read its control items in one request (BatchGetItem)",
                    "dynamodb:BatchGetItem" in may, sorted(may)))
    resources = t["Resources"]
    for d in DESTINATIONS:
        alarms = [name for name, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Alarm"
                  and r["Properties"].get("MetricName") == "BreakerOpen"
                  and {"Name": "Destination", "Value": d} in r["Properties"].get("Dimensions", [])]
        results.append((f"an alarm says when {d}'s breaker is open", len(alarms) == 1, alarms))
    for fn in ["ingest", "router", "feeder"]:
        refused = [name for name, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Alarm"
                   and r["Properties"].get("MetricName") == "SecretsRefused"
                   and {"Name": "Function", "Value": fn} in r["Properties"].get("Dimensions", [])]
        results.append((f"an alarm says when the {fn}'s secrets are refused", len(refused) == 1, refused))
    body = json.dumps(resources.get("Dashboard", {}).get("Properties", {}).get("DashboardBody"))
    for metric in ["BreakerOpen", "Held", "RateLimitWait", "RetryDepth"]:
        results.append((f"the dashboard shows {metric}", metric in body, None))
    return results + warehouse_checks(t, env)


def warehouse_checks(t, env):
    """The warehouse: wired from its parameters, allowed only its prefix or its stream, and an
    Athena table whose partition projection covers the layout the router writes."""
    results = []
    for var, param in {"WAREHOUSE_S3_URI": "WarehouseS3Uri", "FIREHOSE_STREAM_NAME": "FirehoseStreamName"}.items():
        results.append((f"the router's {var} is the {param} parameter", env.get(var) == {"Ref": param}, env.get(var)))
    resources = t["Resources"]
    router = resources["RouterFunction"]
    conditional = {}
    for policy in router["Properties"].get("Policies", []):
        for st in policy.get("Statement", []) if isinstance(policy, dict) else []:
            if isinstance(st, dict) and "Fn::If" in st:
                cond, then, _ = st["Fn::If"]
                conditional[cond] = then
    s3 = conditional.get("HasWarehouseS3", {})
    results.append(("the router may only put objects under WarehouseS3Uri, and only when it is set",
                    s3.get("Action") == ["s3:PutObject"] and "WarehouseS3Uri" in json.dumps(s3.get("Resource"))
                    and "*" not in json.dumps(s3.get("Resource")).replace("${Path}*", ""), s3))
    fh = conditional.get("HasFirehose", {})
    results.append(("the router may only PutRecordBatch to FirehoseStreamName, and only when it is set",
                    fh.get("Action") == ["firehose:PutRecordBatch"] and "${FirehoseStreamName}" in json.dumps(fh.get("Resource")), fh))
    table = resources.get("WarehouseTable", {})
    tin = table.get("Properties", {}).get("TableInput", {})
    params = tin.get("Parameters", {})
    template = json.dumps(params.get("storage.location.template"))
    results.append(("the Glue table projects source= and date= partitions (no crawler)",
                    table.get("Condition") == "HasWarehouseS3" and params.get("projection.enabled") == "true"
                    and params.get("projection.date.type") == "date" and params.get("projection.date.format") == "yyyy-MM-dd"
                    and "source=${!source}/date=${!date}/" in template
                    and [k["Name"] for k in tin.get("PartitionKeys", [])] == ["source", "date"], params))
    return results


def guard_checks(t):
    """Throttling, access logs, log retention, per-function LeadingKeys, secrets, retries."""
    results = secret_checks(t) + retry_checks(t)
    resources = t["Resources"]
    retention = {"Ref": "LogRetentionDays"}

    def kept(ref):
        name = ref.get("Ref") if isinstance(ref, dict) else None
        if name is None and isinstance(ref, dict) and "Fn::GetAtt" in ref:
            name = ref["Fn::GetAtt"][0]
        group = resources.get(name or "", {})
        return group.get("Type") == "AWS::Logs::LogGroup" and group.get("Properties", {}).get("RetentionInDays") == retention

    api = resources.get("HttpApi", {}).get("Properties", {})
    route = api.get("DefaultRouteSettings", {})
    results.append(("the API is throttled by ApiThrottlingRateLimit and ApiThrottlingBurstLimit",
                    route.get("ThrottlingRateLimit") == {"Ref": "ApiThrottlingRateLimit"}
                    and route.get("ThrottlingBurstLimit") == {"Ref": "ApiThrottlingBurstLimit"}, route))
    logs = api.get("AccessLogSettings", {})
    try:
        fmt = json.loads(logs.get("Format", ""))
        json_ok = "requestId" in fmt and "status" in fmt and not any("header" in str(v).lower() for v in fmt.values())
    except ValueError:
        json_ok = False
    results.append(("the API writes JSON access logs (no headers) to a kept log group",
                    json_ok and kept(logs.get("DestinationArn")), logs))
    cap = resources.get("IngestFunction", {}).get("Properties", {}).get("ReservedConcurrentExecutions")
    results.append(("ingest's concurrency is capped by IngestReservedConcurrency",
                    "IngestReservedConcurrency" in json.dumps(cap), cap))
    params = t.get("Parameters", {})
    burst = int(params.get("ApiThrottlingBurstLimit", {}).get("Default", 0))
    reserved = int(params.get("IngestReservedConcurrency", {}).get("Default", 0))
    # What the API lets through at once must find an ingest instance free (else Lambda throttles
    # it into a 5xx instead of the API's 429).
    results.append(("the API's default burst fits ingest's default concurrency",
                    burst > 0 and (reserved == 0 or burst <= reserved), (burst, reserved)))
    prefixes = table_prefixes()
    for name, res in resources.items():
        if res.get("Type") == "AWS::Logs::LogGroup":
            results.append((f"{name} keeps logs LogRetentionDays", kept({"Ref": name}), res.get("Properties")))
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        group = res["Properties"].get("LoggingConfig", {}).get("LogGroup")
        results.append((f"{name} logs to a log group kept LogRetentionDays", kept(group), group))
        want = prefixes.get(FUNCTION_PREFIX.get(name, ""), "?") + "*"
        for st in statements(res):
            actions = st.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            if any(str(a).startswith("dynamodb:") for a in actions):
                keys = st.get("Condition", {}).get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
                results.append((f"{name} reaches only {want} items", keys == [want], keys))
    return results


def self_test(path):
    """Each guard check must catch the template broken in its way."""
    breakages = {
        "no throttling": lambda t: t["Resources"]["HttpApi"]["Properties"].pop("DefaultRouteSettings"),
        "no access logs": lambda t: t["Resources"]["HttpApi"]["Properties"].pop("AccessLogSettings"),
        "no concurrency cap": lambda t: t["Resources"]["IngestFunction"]["Properties"].pop("ReservedConcurrentExecutions"),
        "logs kept forever": lambda t: t["Resources"]["RouterLogs"]["Properties"].pop("RetentionInDays"),
        "no function log group": lambda t: t["Resources"]["FeederFunction"]["Properties"]["LoggingConfig"].pop("LogGroup"),
        "router reaches every item": lambda t: [
            st.pop("Condition") for st in statements(t["Resources"]["RouterFunction"]) if "Condition" in st],
        "a secret as a plain variable": lambda t: t["Resources"]["RouterFunction"]["Properties"]["Environment"][
            "Variables"].update({"HUBSPOT_ACCESS_TOKEN": {"Ref": "HubSpotAccessToken"}}),
        "every secret readable": lambda t: [
            st.update({"Resource": "*"}) for st in statements(t["Resources"]["IngestFunction"])
            if "secretsmanager:GetSecretValue" in json.dumps(st.get("Action"))],
        "a key missing from a function's secret": lambda t: t["Resources"]["RouterSecrets"]["Properties"].update(
            {"SecretString": {"Fn::Sub": '{"SLACK_WEBHOOK_URL":"${SlackWebhookUrl}"}'}}),
        "ingest reading the router's secret": lambda t: [
            st.update({"Resource": secret_of("RouterFunction")}) for st in statements(t["Resources"]["IngestFunction"])
            if "secretsmanager:GetSecretValue" in json.dumps(st.get("Action"))],
        "a parameter that can break the JSON": lambda t: t["Parameters"]["SlackWebhookUrl"].pop("AllowedPattern"),
        "a receive count below the schedule": lambda t: t["Parameters"]["MaxReceiveCount"].update({"Default": 5}),
        "a retention shorter than the schedule": lambda t: t["Resources"]["LeadQueue"]["Properties"].update(
            {"MessageRetentionPeriod": 86400}),
        "a router that cannot reach its DLQ": lambda t: t["Resources"]["RouterFunction"]["Properties"]["Environment"][
            "Variables"].pop("LEAD_DLQ_URL"),
        "no breaker alarm for slack": lambda t: t["Resources"].pop("BreakerOpenSlackAlarm"),
        "no alarm on refused secrets for ingest": lambda t: t["Resources"].pop("SecretsRefusedIngestAlarm"),
        "a router without its rate limits": lambda t: t["Resources"]["RouterFunction"]["Properties"]["Environment"][
            "Variables"].pop("DESTINATION_RATE_LIMITS"),
        "the warehouse on any bucket": lambda t: [
            st["Fn::If"][1].update({"Resource": "*"}) for st in statements(t["Resources"]["RouterFunction"])
            if isinstance(st, dict) and "Fn::If" in st and st["Fn::If"][0] == "HasWarehouseS3"],
        "a warehouse table without projection": lambda t: t["Resources"]["WarehouseTable"]["Properties"][
            "TableInput"]["Parameters"].pop("projection.enabled"),
        "ingest reaches another prefix": lambda t: [
            st["Condition"]["ForAllValues:StringLike"].update({"dynamodb:LeadingKeys": ["delivery#*"]})
            for st in statements(t["Resources"]["IngestFunction"]) if "Condition" in st],
    }
    failed = 0
    for label, breakage in breakages.items():
        t = cfn_yaml.load(path)
        breakage(t)
        caught = [r for r in guard_checks(t) if not r[1]]
        print(("ok   " if caught else "FAIL ") + f"self-test: {label} is caught" + (f" ({caught[0][0]})" if caught else ""))
        failed += not caught
    return 1 if failed else 0


def main(path):
    t = cfn_yaml.load(path)
    results = guard_checks(t)

    for name, res in t.get("Resources", {}).items():
        for s in statements(res):
            actions = s.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            bad = [a for a in actions if "*" in str(a)]
            results.append((f"{name}: no wildcard actions", not bad, bad))
            if s.get("NotAction"):
                results.append((f"{name}: no NotAction", False, s.get("NotAction")))

    for name, p in t.get("Parameters", {}).items():
        if SECRET_PARAM.search(name) and name not in NOT_SECRET:
            results.append((f"parameter {name} is NoEcho", p.get("NoEcho") in (True, "true"), None))

    ingest = t["Resources"]["IngestFunction"]["Properties"]
    limit = ingest["Environment"]["Variables"].get("MAX_BODY_BYTES")
    wired = isinstance(limit, dict) and "Ref" in limit
    results.append(("ingest MAX_BODY_BYTES comes from a parameter", wired, limit))
    if wired:
        param = t["Parameters"][limit["Ref"]]
        ok = int(param.get("Default", SQS_MAX + 1)) <= SQS_MAX and int(param.get("MaxValue", SQS_MAX + 1)) <= SQS_MAX
        results.append((f"body limit default and maximum <= {SQS_MAX}", ok, dict(param)))

    measured = ingest["Environment"]["Variables"].get("MAX_MESSAGE_BYTES")
    results.append((f"ingest MAX_MESSAGE_BYTES is {SQS_MAX}", str(measured) == str(SQS_MAX), measured))
    for name, res in t["Resources"].items():
        if res.get("Type") == "AWS::SQS::Queue":
            size = res.get("Properties", {}).get("MaximumMessageSize")
            results.append((f"{name} MaximumMessageSize is {SQS_MAX}", str(size) == str(SQS_MAX), size))

    feeder = t["Resources"].get("FeederFunction")
    if feeder:
        props = feeder["Properties"]
        share = str(props["Environment"]["Variables"].get("FEEDER_MAX_CONCURRENCY"))
        esm = [e["Properties"].get("ScalingConfig", {}).get("MaximumConcurrency") for e in props["Events"].values()]
        # Each invocation paces itself at rate / FEEDER_MAX_CONCURRENCY: more invocations than
        # that would break Clay's rate limit.
        results.append(("feeder rate share matches its MaximumConcurrency", esm == [int(share)] if share.isdigit() else False, (share, esm)))
    # Operations: every alarm notifies the optional SNS topic, every function emits metrics into
    # the namespace parameter, tracing is one switch, and the dashboard body is valid JSON.
    resources = t["Resources"]
    for name, res in resources.items():
        if res.get("Type") == "AWS::CloudWatch::Alarm":
            acts = res["Properties"].get("AlarmActions")
            results.append((f"{name} notifies the alarm topic", isinstance(acts, dict) and "Fn::If" in acts, acts))
        if res.get("Type") == "AWS::Serverless::Function":
            ns = res["Properties"]["Environment"]["Variables"].get("METRICS_NAMESPACE")
            results.append((f"{name} emits metrics into MetricsNamespace", ns == {"Ref": "MetricsNamespace"}, ns))
    # `sam build` runs `cargo lambda build --bin <name>`, which reads its defaults from Cargo.toml.
    cargo = tomllib.loads(open("Cargo.toml").read())
    lambda_build = cargo.get("package", {}).get("metadata", {}).get("lambda", {}).get("build", {})
    results.append(("cargo lambda builds without default features", lambda_build.get("no_default_features") is True, lambda_build))
    tree = subprocess.run(
        ["cargo", "tree", "--no-default-features", "-e", "normal", "--prefix", "none", "--format", "{p}"],
        capture_output=True, text=True,
    )
    linked = sorted({line.split()[0] for line in tree.stdout.splitlines() if line.strip()} & CLI_CRATES)
    results.append(("the functions' build links no CLI crate", tree.returncode == 0 and not linked, linked or tree.stderr[-300:]))
    tracing = t.get("Globals", {}).get("Function", {}).get("Tracing")
    results.append(("tracing is the Tracing parameter", tracing == {"Ref": "Tracing"}, tracing))
    dash = resources.get("Dashboard", {}).get("Properties", {}).get("DashboardBody", {})
    try:
        body = dash["Fn::Sub"][0]
        json.loads(re.sub(r"\$\{[^}]+\}", "X", body))
        ok = True
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        ok, body = False, e
    results.append(("dashboard body is valid JSON", ok, None if ok else body))
    passed = failed = 0
    for label, ok, detail in results:
        print(("ok   " if ok else "FAIL ") + label + ("" if ok or detail is None else f": {detail}"))
        passed += ok
        failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--self-test"]
    path = args[0] if args else "template.yaml"
    sys.exit(self_test(path) if "--self-test" in sys.argv else main(path))
