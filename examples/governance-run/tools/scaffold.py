"""The `scaffold` tool of the governance example: says what it would generate.

A real executor would run a generator here (`buf generate`, a project template...).
"""

import argparse
import json

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
args = parser.parse_args()
files = [f"{args.name}/{path}" for path in ("README.md", "api.proto", "service.py", "tests/")]
print(json.dumps({"component": args.name, "created": files}))
