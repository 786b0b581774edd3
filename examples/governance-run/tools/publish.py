"""The `publish` tool of the governance example: reports a digest-pinned image.

A real executor would build and push here, or start CI and wait for it.
"""

import argparse
import hashlib
import json

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
args = parser.parse_args()
digest = hashlib.sha256(args.name.encode()).hexdigest()
print(json.dumps({"image": f"registry.example.com/{args.name}@sha256:{digest[:16]}"}))
