/** Small helpers used across the gateway; nothing here knows NATS or WebSockets. */

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
