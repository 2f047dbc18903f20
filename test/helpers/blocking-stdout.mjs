// Preloaded into every test process (scripts/test). With --test-force-exit, Node's test runner can end a
// test file's process while its report, written to a pipe (asynchronous on Linux), is still buffered: the
// last verdicts of the file vanish from the run and its counts (nodejs/node#64833). Blocking writes cannot.
const handle = /** @type {{ _handle?: { setBlocking?: (on: boolean) => void } }} */ (process.stdout)._handle;
handle?.setBlocking?.(true);
