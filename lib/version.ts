/** The gateway's version, shown by /health and the startup log; kept equal to deno.json's. */
export const VERSION = "0.1.0";
