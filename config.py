"""The frozen `Config`: everything Loom reads from the command line and the environment.

`parse_args(argv, environ)` is the only reader of argv and environment variables in Loom;
`main.py` calls it once and passes the `Config` down. Flags keep ComfyUI's names (see
ComfyUI `comfy/cli_args.py`) so existing launch scripts work; ComfyUI flags that have no
meaning in Loom are accepted and reported in `Config.warnings`, and unknown flags are
reported there too instead of crashing. Directories are not created here: whoever writes
into a folder creates it when it first writes.

Commands: `main.py [flags]` serves (`command == "serve"`); `main.py run WORKFLOW
[--set NODE.INPUT=VALUE ...] [flags]` runs one workflow headless (`command == "run"`).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from types import MappingProxyType
from pathlib import Path
from typing import Mapping, NamedTuple, NoReturn, Sequence

REPO_ROOT = Path(__file__).resolve().parent
PRECISIONS = ("fp32", "fp16", "bf16", "auto")
PREVIEW_METHODS = ("auto", "latent2rgb", "taesd", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
VRAM_FLAGS = ("gpu_only", "highvram", "normalvram", "lowvram", "novram", "cpu")

# ComfyUI flags accepted for compatibility and ignored (with a warning): name -> takes a value.
_IGNORED_FLAGS: dict[str, str | None] = {
    "--tls-keyfile": "?", "--tls-certfile": "?", "--cuda-device": "?", "--cuda-malloc": None,
    "--disable-cuda-malloc": None, "--fp64-unet": None, "--fp8_e8m0fnu-unet": None,
    "--cpu-vae": None, "--force-channels-last": None, "--directml": "?", "--oneapi-device-selector": "?",
    "--disable-ipex-optimize": None, "--supports-fp8-compute": None, "--preview-size": "?",
    "--use-split-cross-attention": None, "--use-quad-cross-attention": None,
    "--use-pytorch-cross-attention": None, "--use-sage-attention": None, "--use-flash-attention": None,
    "--disable-xformers": None, "--force-upcast-attention": None, "--dont-upcast-attention": None,
    "--async-offload": None, "--default-hashing-function": "?", "--disable-smart-memory": None,
    "--deterministic": None, "--fast": "*", "--mmap-torch-files": None, "--disable-mmap": None,
    "--quick-test-for-ci": None, "--windows-standalone-build": None, "--disable-metadata": None,
    "--whitelist-custom-nodes": "*", "--disable-api-nodes": None, "--multi-user": None, "--log-stdout": None,
    "--enable-compress-response-body": None,
    "--comfy-api-base": "?", "--database-url": "?",
}


class Override(NamedTuple):
    """One `--set NODE.INPUT=VALUE` of the headless runner; the value is the raw string."""

    node: str
    input: str
    value: str


@dataclass(frozen=True)
class Config:
    """Loom's settings, read once from argv and the environment (see `parse_args`)."""

    # server
    listen: str = "127.0.0.1"
    port: int = 8188
    enable_cors_header: str | None = None
    auth_token: str | None = None
    max_upload_size: float = 100.0
    max_history: int = 10000
    allowed_hosts: tuple[str, ...] = ()
    front_end: str = "loom"
    front_end_root: Path | None = None
    front_end_version: str | None = None
    auto_launch: bool = False
    dont_print_server: bool = False
    verbose: bool = False
    log_level: str = "INFO"
    # folders
    base_directory: Path = REPO_ROOT
    models_directory: Path = REPO_ROOT / "models"
    output_directory: Path = REPO_ROOT / "output"
    input_directory: Path = REPO_ROOT / "input"
    temp_directory: Path = REPO_ROOT / "temp"
    user_directory: Path = REPO_ROOT / "user"
    extra_model_paths_config: tuple[Path, ...] = ()
    # the environment, for `~` and `$VARS` in extra_model_paths.yaml (never shown: repr=False)
    path_variables: Mapping[str, str] = field(default_factory=dict, repr=False)
    # cache
    cache_ram: float | None = None
    cache_none: bool = False
    cache_lru: int = 0
    cache_classic: bool = False
    # device and memory
    cpu: bool = False
    gpu_only: bool = False
    highvram: bool = False
    normalvram: bool = False
    lowvram: bool = False
    novram: bool = False
    reserve_vram: float | None = None
    precision: str | None = None  # None: the defaults (half on GPU, fp32 on CPU); "auto" may pick bf16 on CPU
    unet_precision: str | None = None
    vae_precision: str | None = None
    text_enc_precision: str | None = None
    # ComfyUI's per-component weight flags (--fp16-unet, --fp8_e4m3fn-unet, --bf16-vae, --fp8_e4m3fn-text-enc, ...):
    # the dtype weights are stored in; on a CPU they compute in fp32 (the model manager decides, executor/memory.py)
    unet_weight_dtype: str | None = None
    vae_weight_dtype: str | None = None
    text_enc_weight_dtype: str | None = None
    compile: bool = False
    preview_method: str = "auto"
    # custom nodes
    custom_nodes_directories: tuple[Path, ...] = ()
    disable_all_custom_nodes: bool = False
    disabled_custom_nodes: tuple[str, ...] = ()
    # cluster (Ray): None runs prompts in this process (see cluster/)
    ray_address: str | None = None
    ray_workers: int | None = None
    # command
    command: str = "serve"
    workflow: Path | None = None
    overrides: tuple[Override, ...] = ()
    packs: tuple[str, ...] = ()  # install-pack-requirements: the packs named (none: all)
    warnings: tuple[str, ...] = ()
    # the command line this Config was read from, program name first, secrets replaced (GET /system_stats)
    argv: tuple[str, ...] = ("main.py",)

    @property
    def vram_mode(self) -> str:
        """One of "cpu", "gpu_only", "highvram", "normalvram", "lowvram", "novram" or "auto"."""
        for name in VRAM_FLAGS[::-1]:
            if getattr(self, name):
                return name
        return "auto"

    @property
    def custom_nodes_directory(self) -> Path:
        """The main custom-node folder (`<base>/custom_nodes`)."""
        return self.base_directory / "custom_nodes"


class _Parser(argparse.ArgumentParser):
    """argparse with its exit status kept (2) but a message saying how to get help."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--listen", nargs="?", const="0.0.0.0", default="127.0.0.1", metavar="IP",
                   help="address to listen on (default 127.0.0.1; bare --listen means 0.0.0.0)")
    g.add_argument("--port", type=int, default=8188, help="port to listen on (default 8188)")
    g.add_argument("--enable-cors-header", nargs="?", const="*", default=None, metavar="ORIGIN",
                   help="send CORS headers allowing ORIGIN (default '*')")
    g.add_argument("--auth-token", default=None, metavar="TOKEN",
                   help="require this bearer token on API requests (or set LOOM_AUTH_TOKEN)")
    g.add_argument("--max-upload-size", type=float, default=100.0, metavar="MB", help="largest upload in MB")
    g.add_argument("--max-history", type=int, default=10000, metavar="N", help="prompts kept in the history")
    g.add_argument("--allowed-hosts", action="append", default=[], metavar="HOST",
                   help="extra Host names the server answers to, comma-separated or repeated (default: loopback and the "
                        "listen address; '*' allows any; refuses DNS-rebinding pages otherwise)")
    g.add_argument("--front-end", choices=("loom", "comfyui", "official"), default="loom",
                   help="which web editor to serve: Loom's (default) or ComfyUI's official frontend ('comfyui', "
                        "also 'official'), from the optional comfyui-frontend-package (requirements-frontend.txt)")
    g.add_argument("--front-end-root", default=None, metavar="DIR",
                   help="serve the frontend in DIR (ComfyUI's flag; e.g. a built ComfyUI_frontend dist folder)")
    g.add_argument("--front-end-version", default=None, metavar="OWNER/REPO@VERSION",
                   help="ComfyUI's flag: Loom downloads nothing, so it serves the installed comfyui-frontend-package "
                        "(pip install comfyui-frontend-package==VERSION) and warns when another version is asked for")
    g.add_argument("--auto-launch", action="store_true", help="open the editor in a browser on start")
    g.add_argument("--disable-auto-launch", action="store_true", help="do not open a browser (the default)")
    g.add_argument("--dont-print-server", action="store_true", help="print less server output")
    g.add_argument("--verbose", nargs="?", const="DEBUG", default=None, choices=LOG_LEVELS,
                   help="log level (bare --verbose means DEBUG)")


def _add_folder_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("folders")
    g.add_argument("--base-directory", metavar="DIR", help="folder holding models/ input/ output/ temp/ user/")
    for name in ("models", "output", "input", "temp", "user"):
        g.add_argument(f"--{name}-directory", metavar="DIR", help=f"{name} folder (overrides --base-directory)")
    g.add_argument("--extra-model-paths-config", nargs="+", action="append", default=[], metavar="FILE",
                   help="extra_model_paths.yaml file(s) in ComfyUI's format (repeatable)")


def _add_cache_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cache")
    g.add_argument("--cache-ram", type=float, nargs="?", const=4.0, default=None, metavar="GB",
                   help="RAM budget of the output cache in GB (LRU eviction)")
    g.add_argument("--cache-none", action="store_true", help="cache no node outputs")
    g.add_argument("--cache-lru", type=int, default=0, metavar="N", help="keep at most N cached node outputs")
    g.add_argument("--cache-classic", action="store_true", help="accepted for ComfyUI compatibility")


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("device and memory")
    vram = g.add_mutually_exclusive_group()
    vram.add_argument("--cpu", action="store_true", help="run everything on the CPU")
    vram.add_argument("--gpu-only", action="store_true", help="keep and run everything on the GPU")
    vram.add_argument("--highvram", action="store_true", help="keep models on the GPU after use")
    vram.add_argument("--normalvram", action="store_true", help="force the normal VRAM policy")
    vram.add_argument("--lowvram", action="store_true", help="stream parts of big models to save VRAM")
    vram.add_argument("--novram", action="store_true", help="stream all weights (when lowvram is not enough)")
    g.add_argument("--reserve-vram", type=float, default=None, metavar="GB", help="VRAM left for other programs")
    g.add_argument("--precision", choices=PRECISIONS, default=None, help="default compute precision")
    for part in ("unet", "vae", "text-enc"):
        g.add_argument(f"--{part}-precision", choices=PRECISIONS, default=None, help=f"{part} precision")
    g.add_argument("--compile", action="store_true", help="torch.compile the diffusion model")
    g.add_argument("--preview-method", choices=PREVIEW_METHODS, default="auto",
                   help="sampler preview method (default auto: TAESD when models/vae_approx has it, else latent2rgb; "
                        "ComfyUI's default is none)")
    # ComfyUI's precision flags, read in `_precisions`: --force-* set the compute precision, the per-component ones
    # the weight dtype (ComfyUI's meaning: fp16/bf16 arithmetic on a GPU, storage with fp32 compute on a CPU).
    for alias in ("--force-fp16", "--force-fp32", "--fp16-unet", "--bf16-unet", "--fp32-unet", "--fp16-vae",
                  "--fp32-vae", "--bf16-vae", "--fp16-text-enc", "--fp32-text-enc", "--bf16-text-enc",
                  "--fp8_e4m3fn-unet", "--fp8_e5m2-unet", "--fp8_e4m3fn-text-enc", "--fp8_e5m2-text-enc"):
        g.add_argument(alias, action="store_true", help=argparse.SUPPRESS)


def _add_custom_node_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("custom nodes")
    g.add_argument("--custom-nodes-directory", action="append", default=[], metavar="DIR",
                   help="another folder of custom node packs (repeatable)")
    g.add_argument("--disable-all-custom-nodes", action="store_true", help="load no custom node packs")
    g.add_argument("--disable-custom-node", action="append", default=[], metavar="NAME",
                   help="do not load this pack (repeatable)")


def _add_cluster_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (needs requirements-ray.txt)")
    g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="run prompts on Ray worker actors: 'auto' (the cluster this machine belongs to), "
                        "HOST:PORT (a cluster's GCS address), or 'local' (start a Ray cluster on this machine)")
    g.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="number of workers (default: one per GPU of the cluster, else one per node)")


def _add_ignored_flags(p: argparse.ArgumentParser) -> None:
    for flag, nargs in _IGNORED_FLAGS.items():
        if nargs is None:
            p.add_argument(flag, action="store_true", dest=_ignored_dest(flag), help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, nargs=nargs, dest=_ignored_dest(flag), default=None, help=argparse.SUPPRESS)


def _ignored_dest(flag: str) -> str:
    return "ignored__" + flag.lstrip("-").replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for `--help` text and tests)."""
    p = _Parser(prog="main.py", description="Loom: a node-graph workflow engine for Stable Diffusion. "
                "Commands: (none) serve the API and editor; 'run WORKFLOW' runs one workflow headless; "
                "'install-pack-requirements [PACK ...]' installs custom node packs' requirements.txt with Loom's "
                "pins kept.")
    p.add_argument("command_args", nargs="*", metavar="run WORKFLOW", help="run a workflow headless")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", dest="set_values",
                   help="with 'run': change one input before running (repeatable)")
    _add_server_flags(p)
    _add_folder_flags(p)
    _add_cache_flags(p)
    _add_device_flags(p)
    _add_custom_node_flags(p)
    _add_cluster_flags(p)
    _add_ignored_flags(p)
    return p


def _expand(path: str, environ: Mapping[str, str], relative_to: Path | None = None) -> Path:
    """`~` expanded from `environ["HOME"]`, made absolute (relative to cwd or `relative_to`)."""
    if path == "~" or path.startswith("~/"):
        home = environ.get("HOME") or environ.get("USERPROFILE")
        if home:
            path = home + path[1:]
    p = Path(path)
    if not p.is_absolute():
        p = (relative_to / p) if relative_to is not None else p.absolute()
    return p


def _precisions(ns: argparse.Namespace) -> dict[str, str | None]:
    """`--precision`, Loom's per-component compute precisions, and ComfyUI's per-component weight dtypes."""
    precision = ns.precision or ("fp16" if ns.force_fp16 else "fp32" if ns.force_fp32 else None)

    def pick(explicit: str | None, **aliases: bool) -> str | None:
        if explicit:
            return explicit
        return next((value for value, on in aliases.items() if on), None)

    return {
        "precision": precision,
        "unet_precision": ns.unet_precision,
        "vae_precision": ns.vae_precision,
        "text_enc_precision": ns.text_enc_precision,
        "unet_weight_dtype": pick(None, fp16=ns.fp16_unet, bf16=ns.bf16_unet, fp32=ns.fp32_unet,
                                  fp8_e4m3fn=ns.fp8_e4m3fn_unet, fp8_e5m2=ns.fp8_e5m2_unet),
        "vae_weight_dtype": pick(None, fp16=ns.fp16_vae, bf16=ns.bf16_vae, fp32=ns.fp32_vae),
        "text_enc_weight_dtype": pick(None, fp16=ns.fp16_text_enc, bf16=ns.bf16_text_enc, fp32=ns.fp32_text_enc,
                                      fp8_e4m3fn=ns.fp8_e4m3fn_text_enc, fp8_e5m2=ns.fp8_e5m2_text_enc),
    }


def _directories(ns: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Path]:
    base_arg = ns.base_directory or environ.get("LOOM_BASE_DIRECTORY")
    base = _expand(base_arg, environ) if base_arg else REPO_ROOT
    dirs = {"base_directory": base}
    for name in ("models", "output", "input", "temp", "user"):
        explicit = getattr(ns, f"{name}_directory")
        dirs[f"{name}_directory"] = _expand(explicit, environ) if explicit else base / name
    return dirs


INSTALL_PACK_REQUIREMENTS = "install-pack-requirements"


def _command(ns: argparse.Namespace, parser: argparse.ArgumentParser,
             environ: Mapping[str, str]) -> tuple[str, Path | None, tuple[Override, ...]]:
    args = list(ns.command_args)
    if ns.listen == "run" and (not args or args[0] != "run"):
        # `--listen run WF`: argparse gave "run" to the optional IP of a bare --listen.
        ns.listen, args = "0.0.0.0", ["run", *args]
    if not args:
        if ns.set_values:
            parser.error("--set is only valid with 'run WORKFLOW'")
        return "serve", None, ()
    if args[0] == INSTALL_PACK_REQUIREMENTS:
        if ns.set_values:
            parser.error("--set is only valid with 'run WORKFLOW'")
        return INSTALL_PACK_REQUIREMENTS, None, ()
    if args[0] != "run":
        parser.error(f"unknown command {args[0]!r}; the commands are 'run WORKFLOW' and "
                     f"'{INSTALL_PACK_REQUIREMENTS} [PACK ...]'")
    if len(args) != 2:
        parser.error("'run' takes exactly one WORKFLOW file (API JSON, UI JSON or a PNG with a workflow)")
    return "run", _expand(args[1], environ), tuple(parse_override(s, parser) for s in ns.set_values)


def parse_override(text: str, parser: argparse.ArgumentParser | None = None) -> Override:
    """Parse `NODE.INPUT=VALUE`; NODE (an id or a title, which may hold dots) is everything
    before the last dot of the part before the first `=`."""
    key, sep, value = text.partition("=")
    node, dot, name = key.rpartition(".")
    if not sep or not dot or not node or not name:
        message = f"--set {text!r} is not NODE.INPUT=VALUE (for example --set 3.seed=42)"
        if parser is not None:
            parser.error(message)
        raise ValueError(message)
    return Override(node.strip(), name.strip(), value)


_SECRET_WORDS = ("token", "password", "passwd", "secret", "api-key", "api_key", "apikey", "credential")
REDACTED = "<redacted>"


def _secret_flag(arg: str) -> bool:
    return arg.startswith("-") and any(word in arg.lower() for word in _SECRET_WORDS)


def redacted_argv(argv: Sequence[str], token: str | None) -> list[str]:
    """`argv` with the value of every secret-looking flag (`--auth-token T`, `--x-api-key=K`, ...)
    and any argument holding the configured token replaced by "<redacted>"."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not arg.startswith("--"):
            out.append(REDACTED)
        elif "=" in arg and _secret_flag(arg.split("=", 1)[0]):
            out.append(arg.split("=", 1)[0] + "=" + REDACTED)
        elif token and token in arg:
            out.append(arg.replace(token, REDACTED))
        else:
            out.append(arg)
        hide_next = _secret_flag(arg) and "=" not in arg
    return out


def _warnings(ns: argparse.Namespace, unknown: Sequence[str]) -> tuple[str, ...]:
    out = [f"ignoring ComfyUI flag {flag}: it has no effect in Loom"
           for flag in _IGNORED_FLAGS if getattr(ns, _ignored_dest(flag)) not in (None, False)]
    if ns.cache_classic:
        out.append("ignoring ComfyUI flag --cache-classic: Loom's output cache is always keyed by signature and bounded "
                   "by --cache-ram / --cache-lru (--cache-none turns it off)")
    if ns.front_end_version:
        out.append(f"--front-end-version {ns.front_end_version}: Loom downloads no frontend; it serves the installed "
                   "comfyui-frontend-package (pip install comfyui-frontend-package==VERSION to change it)")
    if unknown:
        out.append(f"ignoring unknown argument(s): {' '.join(unknown)}")
    return tuple(out)


def parse_args(argv: Sequence[str], environ: Mapping[str, str], prog: str = "main.py") -> Config:
    """Read the command line (without the program name, which is `prog`) and the environment into a `Config`.

    Environment: `LOOM_BASE_DIRECTORY` (when `--base-directory` is absent), `LOOM_AUTH_TOKEN`
    (when `--auth-token` is absent) and `HOME` (to expand `~`). Bad values exit with status 2
    and a usage message, as argparse does.
    """
    parser = build_parser()
    ns, unknown = parser.parse_known_intermixed_args(list(argv))
    command, workflow, overrides = _command(ns, parser, environ)
    if ns.ray_workers is not None and ns.ray_workers < 1:
        parser.error("--ray-workers must be at least 1")
    log_level = ns.verbose or "INFO"
    auth_token = ns.auth_token or environ.get("LOOM_AUTH_TOKEN") or None
    return Config(
        listen=ns.listen,
        port=ns.port,
        enable_cors_header=ns.enable_cors_header,
        auth_token=auth_token,
        max_upload_size=ns.max_upload_size,
        max_history=ns.max_history,
        allowed_hosts=tuple(h.strip().lower() for group in ns.allowed_hosts for h in group.split(",") if h.strip()),
        front_end="comfyui" if ns.front_end == "official" or ns.front_end_version or ns.front_end_root
        else ns.front_end,
        front_end_root=_expand(ns.front_end_root, environ) if ns.front_end_root else None,
        front_end_version=ns.front_end_version,
        auto_launch=ns.auto_launch and not ns.disable_auto_launch,
        dont_print_server=ns.dont_print_server,
        verbose=log_level == "DEBUG",
        log_level=log_level,
        **_directories(ns, environ),
        path_variables=MappingProxyType(dict(environ)),
        extra_model_paths_config=tuple(_expand(f, environ) for group in ns.extra_model_paths_config for f in group),
        cache_ram=ns.cache_ram,
        cache_none=ns.cache_none,
        cache_lru=ns.cache_lru,
        cache_classic=ns.cache_classic,
        **{name: getattr(ns, name) for name in VRAM_FLAGS},
        reserve_vram=ns.reserve_vram,
        **_precisions(ns),
        compile=ns.compile,
        preview_method=ns.preview_method,
        custom_nodes_directories=tuple(_expand(d, environ) for d in ns.custom_nodes_directory),
        disable_all_custom_nodes=ns.disable_all_custom_nodes,
        disabled_custom_nodes=tuple(ns.disable_custom_node),
        ray_address=ns.ray_address or None,
        ray_workers=ns.ray_workers,
        command=command,
        workflow=workflow,
        overrides=overrides,
        packs=tuple(ns.command_args[1:]) if command == INSTALL_PACK_REQUIREMENTS else (),
        warnings=_warnings(ns, unknown),
        argv=tuple(redacted_argv([prog, *argv], auth_token)),
    )
