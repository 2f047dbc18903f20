/** How errors are written into logs, problem details and failure headers. */

/** The error's message (or the thrown value as text). */
export const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** `Name: message`, for failure records where the kind of error matters (dead-letter headers, spans). */
export const errorText = (err: unknown): string =>
  err instanceof Error ? `${err.name}: ${err.message}` : String(err);
