"""The application state keys (`web.AppKey`) and the server's own settings, read from Config.

Owns: `ServerSettings` (the part of `config.Config` the HTTP layer uses, with defaults so the
server also runs from a bare test runtime) and the typed keys under which `create_app` stores
the runtime, the queue, the worker, the websocket hub and the settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from executor.queue import PromptQueue
from executor.worker import Worker

if TYPE_CHECKING:
    from config import Config
    from runtime import Runtime


@dataclass(frozen=True)
class ServerSettings:
    """HTTP-level settings. `cors_origin` "*" allows any origin; `max_json_bytes` bounds
    JSON request bodies (prompts), `max_upload_bytes` uploads (from a Config both are
    `--max-upload-size`, as ComfyUI bounds every body); `allowed_hosts` are the extra
    `Host` names (lower case, "*" any) requests may carry besides loopback and the listen address."""

    host: str = "127.0.0.1"
    port: int = 8188
    cors_origin: str | None = None
    auth_token: str | None = None
    max_upload_bytes: int = 100 * 1024 * 1024
    max_json_bytes: int = 64 * 1024 * 1024
    max_history: int = 10000
    allowed_hosts: tuple[str, ...] = ()
    verbose: bool = False
    front_end: str = "loom"
    web_root: Path | None = None
    auto_launch: bool = False
    dont_print_server: bool = False

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> "ServerSettings":
        """Read the server flags of `config.Config`."""
        values = {
            "host": config.listen,
            "port": config.port,
            "cors_origin": config.enable_cors_header,
            "auth_token": config.auth_token or None,
            "max_upload_bytes": int(config.max_upload_size * 1024 * 1024),
            # ComfyUI's --max-upload-size bounds every request body, prompts included.
            "max_json_bytes": int(config.max_upload_size * 1024 * 1024),
            "max_history": config.max_history,
            "allowed_hosts": tuple(config.allowed_hosts),
            "verbose": config.verbose,
            "front_end": config.front_end,
            "web_root": config.front_end_root,
            "auto_launch": config.auto_launch,
            "dont_print_server": config.dont_print_server,
        }
        values.update(overrides)
        return cls(**values)


RUNTIME: web.AppKey[Runtime] = web.AppKey("loom_runtime", object)
SETTINGS: web.AppKey[ServerSettings] = web.AppKey("loom_settings", ServerSettings)
QUEUE: web.AppKey[PromptQueue] = web.AppKey("loom_queue", PromptQueue)
WORKER: web.AppKey[Worker] = web.AppKey("loom_worker", Worker)
EXTENSION_DIRS: web.AppKey[dict] = web.AppKey("loom_extension_dirs", dict)
WEB_ROOT: web.AppKey[Any] = web.AppKey("loom_web_root", object)  # the served front-end folder or None
