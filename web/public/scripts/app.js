// Compatibility shim: ComfyUI web extensions import `app` from "../../scripts/app.js".
export const app = window.loomApp;
