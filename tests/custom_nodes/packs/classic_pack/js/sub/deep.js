export const DEEP = 1;
