"""Loom's command line: `python main.py [flags]` serves the API and editor (127.0.0.1:8188 by
default); `python main.py run WORKFLOW [--set NODE.INPUT=VALUE ...]` runs one workflow headless;
`python main.py install-pack-requirements [PACK ...]` installs custom node packs' requirements.txt
(`pack_requirements.py`: Loom's pins in constraints.txt are kept).

The only place that reads argv and the environment (through `config.parse_args`); everything
else receives the frozen Config or the Runtime built from it.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Mapping, Sequence


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Parse the flags, build the runtime, then serve or run one workflow; returns the exit status."""
    from config import parse_args

    config = parse_args(list(sys.argv[1:] if argv is None else argv), dict(os.environ if environ is None else environ),
                        prog=sys.argv[0] if argv is None and sys.argv and sys.argv[0] else "main.py")
    logging.basicConfig(level=getattr(logging, config.log_level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for warning in config.warnings:
        logging.getLogger("loom").warning(warning)

    if config.command == "install-pack-requirements":
        from pack_requirements import main as install_pack_requirements

        return install_pack_requirements(config, config.packs)
    from runtime import build_runtime

    runtime = build_runtime(config)
    if config.command == "run":
        from executor.headless import run_headless

        if config.ray_address:
            logging.getLogger("loom").warning("--ray-address is ignored by `main.py run`: the workflow runs in this "
                                              "process (the cluster runs prompts queued through the server)")

        return run_headless(runtime, config.workflow, config.overrides)  # type: ignore[arg-type]
    if config.ray_address:
        from cluster import enable

        enable(runtime)  # prompts run on Ray worker actors (cluster/)
    from server.app import serve

    serve(runtime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
