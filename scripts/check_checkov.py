"""checkov, what security teams run on a template, on template.yaml.

Fails on any finding that is neither fixed nor suppressed in the template itself (a resource's
`Metadata: checkov: skip:` entry) with a reason. Prints the counts and each suppression with its
reason. Usage: check_checkov.py CHECKOV_BINARY [template.yaml]
"""

import json
import subprocess
import sys


def main(checkov, path):
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
        print(f"FAIL {check['check_id']} {check['resource']}: {check['check_name']}")
        status = 1
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
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "template.yaml"))
