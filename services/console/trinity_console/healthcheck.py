"""``python -m trinity_console.healthcheck URL``: exit 0 when the console answers 200 at URL
(the image's HEALTHCHECK; it needs nothing but the standard library)."""

from __future__ import annotations

import sys
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else "http://127.0.0.1:7400/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as reply:
            healthy = reply.status == 200
    except OSError as error:
        print(f"{url}: {error}")
        return 1
    print(f"{url}: {'OK' if healthy else 'unhealthy'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
