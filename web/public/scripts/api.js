// Compatibility shim: ComfyUI web extensions import `api` from "../../scripts/api.js".
export const api = window.loomApp?.api;
