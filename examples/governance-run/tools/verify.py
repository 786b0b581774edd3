"""The `verify` tool of the governance example: checks that turn green in a given round.

Prints one JSON object (the step's output, so gateways can read ``output.green``) and
exits 0 either way: red checks are a result, not a failure of the tool.
"""

import argparse
import json

parser = argparse.ArgumentParser()
parser.add_argument("--round", type=int, required=True, help="which verification round this is")
parser.add_argument("--green-at", type=int, default=2, help="the first green round")
args = parser.parse_args()
green = args.round >= args.green_at
print(
    json.dumps(
        {
            "green": green,
            "round": args.round,
            "passed": 42 if green else 39,
            "failed": [] if green else ["test_export_empty", "test_export_quotes", "lint"],
        }
    )
)
