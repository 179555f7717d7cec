"""`python -m kb.testing.gemini_emulator [--host H] [--port P] [--api-key KEY]`: serve until Ctrl-C.

The first line on stdout is the base URL, for a parent process to read (`--port 0` lets the OS pick a port).
"""

import argparse
import contextlib
import sys
import threading

from .emulator import GeminiEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kb.testing.gemini_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    parser.add_argument("--api-key", default="test-key", help="the accepted API key (default test-key)")
    parser.add_argument("--any-key", action="store_true", help="accept any non-empty API key")
    arguments = parser.parse_args(argv)
    emulator = GeminiEmulator(
        None if arguments.any_key else arguments.api_key, host=arguments.host, port=arguments.port
    )
    with emulator:
        print(emulator.base_url, flush=True)
        print("Gemini emulator running; Ctrl-C stops it.", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
