"""`python tests/server/serve_slow.py [main.py flags]`: what `python main.py` does (parse the
flags, build the runtime, serve), plus the test nodes of harness.py, for the restart test."""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

from config import parse_args  # noqa: E402
from harness import SaveNumberedImage, SaveTestImage, SlowSteps, WaitWhileFileExists  # noqa: E402
from runtime import build_runtime  # noqa: E402
from server.app import serve  # noqa: E402

if __name__ == "__main__":
    runtime = build_runtime(parse_args(sys.argv[1:], dict(os.environ)))
    runtime.registry.register(SlowSteps, pack="tests")
    runtime.registry.register(SaveTestImage, pack="tests")
    runtime.registry.register(SaveNumberedImage, pack="tests")
    runtime.registry.register(WaitWhileFileExists, pack="tests")
    serve(runtime)
