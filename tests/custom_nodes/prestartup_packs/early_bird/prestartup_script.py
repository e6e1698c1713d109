"""Runs before any pack is imported: leaves a marker the pack's module reads, and checks compat is there."""
import builtins

import folder_paths  # ComfyUI's module is importable already, as in ComfyUI

builtins.loom_test_prestartup_marker = ["ran", folder_paths.get_output_directory()]
