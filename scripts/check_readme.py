"""docs/testing.md's `sam local` commands are the ones scripts/sam-local.sh runs, character for
character: the Linux block (x86_64) and the Docker Desktop block (arm64, Apple silicon) are
compared with `scripts/sam-local.sh commands linux|desktop`. Exits non-zero on a difference."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commands(kind, arch):
    out = subprocess.run([str(ROOT / "scripts" / "sam-local.sh"), "commands", kind], capture_output=True,
                         text=True, check=True, env={**os.environ, "SAM_ARCH": arch})
    return out.stdout.strip()


def main():
    readme = (ROOT / "docs" / "testing.md").read_text()
    section = readme.split("## Local testing", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]
    failed = 0
    for kind, arch in [("linux", "x86_64"), ("desktop", "arm64")]:
        want = commands(kind, arch)
        ok = want in blocks
        print(("ok   " if ok else "FAIL ") + f"docs/testing.md shows the {kind} sam local commands the script runs")
        if not ok:
            print(want)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
