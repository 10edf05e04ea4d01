"""checkov, what security teams run on a template, on template.yaml.

Fails on any finding that is neither fixed nor suppressed in the template itself (a resource's
`Metadata: checkov: skip:` entry) with a reason. Prints the counts and each suppression with its
reason. Usage: check_checkov.py CHECKOV_BINARY [template.yaml] [--self-test]

`--self-test` also runs checkov on a copy without IngestFunction's suppressions and checks
that the run fails: the gate can fail.
"""

import json
import os
import subprocess
import sys
import tempfile


def self_test(checkov, path):
    from cfnlint.decode import cfn_yaml

    t = cfn_yaml.load(path)
    t["Resources"]["IngestFunction"]["Metadata"].pop("checkov")
    with tempfile.TemporaryDirectory() as d:
        broken = os.path.join(d, "template.json")
        with open(broken, "w") as f:
            json.dump(t, f)
        caught = main(checkov, broken, quiet=True) != 0
    print(("ok   " if caught else "FAIL ") + "self-test: a finding without its suppression fails the gate")
    return 0 if caught else 1


def main(checkov, path, quiet=False):
    run = subprocess.run(
        [checkov, "-f", path, "--framework", "cloudformation", "--compact", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        report = json.loads(run.stdout)
    except ValueError:
        print(f"FAIL checkov gave no report (exit {run.returncode}): {run.stderr[-500:]}")
        return 1
    summary = report.get("summary", {})
    results = report.get("results", {})
    failed = results.get("failed_checks", [])
    skipped = results.get("skipped_checks", [])
    status = 0
    for check in failed:
        if not quiet:
            print(f"FAIL {check['check_id']} {check['resource']}: {check['check_name']}")
        status = 1
    if quiet:
        return status
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "").strip()
        if len(reason) < 20:
            print(f"FAIL {check['check_id']} {check['resource']} is suppressed without a reason")
            status = 1
        else:
            print(f"skip {check['check_id']} {check['resource']}: {reason}")
    print(
        f"checkov {summary.get('checkov_version')}: {summary.get('passed')} passed, "
        f"{summary.get('failed')} failed, {summary.get('skipped')} suppressed with a reason"
    )
    if summary.get("parsing_errors"):
        print("FAIL checkov could not parse the template")
        status = 1
    return status


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--self-test"]
    template = args[1] if len(args) > 1 else "template.yaml"
    status = main(args[0], template)
    if "--self-test" in sys.argv:
        status |= self_test(args[0], template)
    sys.exit(status)
