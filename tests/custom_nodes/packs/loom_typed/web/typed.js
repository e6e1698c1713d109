// typed pack editor script (served under /extensions/loom_typed/)
export const TYPED = "loom_typed";
