"""Log hygiene: fail if any captured log line holds a secret, a token or a raw email address.

Usage: check_logs.py [--json] FILE_OR_DIR...
  --json   every line must also be one JSON object (the functions' own log files)
Prints one line per file and "N passed, N failed"; exits non-zero on a leak or on no logs.
"""

import json
import pathlib
import re
import sys

PATTERNS = {
    "email address": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    "whsec_ secret": re.compile(r"whsec_[A-Za-z0-9+/=]{8,}"),
    "bearer token": re.compile(r"[Bb]earer\s+[A-Za-z0-9._~+/-]{6,}"),
    "Slack/Zapier hook URL": re.compile(r"hooks\.(slack|zapier)\.com/\S+"),
}
# Every secret the test suites and sample events use.
SECRETS = [
    "tok_live_5a1d9c0e7f",
    "local-dev-token-change-me",
    "pat-na1-test",
    "s3cr3t-token-for-tests",
    "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "bG9jYWwtZGV2LXN0YW5kYXJkLXdlYmhvb2tzLWtleQ",
]


def files(args):
    for a in args:
        p = pathlib.Path(a)
        if p.is_dir():
            yield from sorted(p.glob("*.log"))
        elif p.exists():
            yield p


def main(argv):
    want_json = "--json" in argv
    paths = list(files([a for a in argv if a != "--json"]))
    passed = failed = lines_seen = 0
    for path in paths:
        problems = []
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            lines_seen += 1
            for label, rx in PATTERNS.items():
                if rx.search(line):
                    problems.append(f"line {n}: {label}")
            for s in SECRETS:
                if s in line:
                    problems.append(f"line {n}: a test secret")
            if want_json:
                try:
                    if not isinstance(json.loads(line), dict):
                        raise ValueError
                except ValueError:
                    problems.append(f"line {n}: not a JSON object")
        if problems:
            failed += 1
            print(f"FAIL {path}: " + "; ".join(problems[:10]))
        else:
            passed += 1
            print(f"ok   {path}")
    if lines_seen == 0:
        print("FAIL no log lines were captured")
        failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
