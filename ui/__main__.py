"""``python -m ui [--host H] [--port P] [--share]``: serve the app (by default on 127.0.0.1:7860)."""

from __future__ import annotations

import argparse
import os

# OpenMP threads that sleep while they wait instead of spinning. On two cores shared with the browser, another
# user's analysis or any other program, spinning threads starve each other: a webcam frame measured 900 ms with
# the default policy and 150 ms with this one under the same load. Read once, when core loads its network library,
# so it is set before anything imports core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve the app until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m ui", description="Serve the Class Map Explorer app.")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"argument --port: must be between 1 and 65535, got {args.port}")

    from ui.app import serve  # after parsing, so --help is instant

    serve(host=args.host, port=args.port, share=args.share)


if __name__ == "__main__":
    main()
