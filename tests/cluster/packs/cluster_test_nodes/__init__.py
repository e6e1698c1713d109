"""Test pack for the cluster tests (ComfyUI's classic API): a node that waits, reporting
progress and honouring interrupts, and a node that kills the worker process running it."""
import os
import signal
import time

import comfy.model_management
import comfy.utils


class ClusterTestWait:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0, "step": 0.01}),
                             "steps": ("INT", {"default": 10, "min": 1, "max": 10000}),
                             "text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "wait"
    OUTPUT_NODE = True
    CATEGORY = "tests/cluster"

    def wait(self, seconds, steps, text):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(seconds / steps)
            bar.update(1)
        return {"ui": {"text": [text]}, "result": (text,)}


class ClusterTestCrash:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "crash"
    OUTPUT_NODE = True
    CATEGORY = "tests/cluster"

    def crash(self, text):
        os.kill(os.getpid(), signal.SIGKILL)
        return {}


NODE_CLASS_MAPPINGS = {"ClusterTestWait": ClusterTestWait, "ClusterTestCrash": ClusterTestCrash}
