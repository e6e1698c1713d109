// classic pack editor script
export const CLASSIC = 1;
