/**
 * Streams a command's output as it is written, stdout and stderr apart, and tells a timeout from an
 * ordinary failure.
 *
 *   node dist/examples/streaming.js
 */
import { Prism, PrismApiError } from 'prism-sandbox';

const prism = Prism.fromEnv();
const sb = await prism.sandboxes.create();
try {
  const script = 'import sys, time\nfor i in range(3):\n    print("tick", i, flush=True)\n    time.sleep(0.2)\nprint("done", file=sys.stderr)';
  const seen: string[] = [];
  const r = await sb.exec(['python3', '-c', script], {
    onStdout: (b) => seen.push(`out: ${new TextDecoder().decode(b).trim()}`),
    onStderr: (b) => seen.push(`err: ${new TextDecoder().decode(b).trim()}`),
  });
  console.log(seen.join('\n'));
  console.log(`exit ${r.exitCode}`);

  // A command past its time limit is killed (with everything it started) and says so.
  const slow = await sb.exec('sleep 30', { timeoutSec: 1 });
  console.log(`timed out: ${slow.timedOut} (${slow.limitExceeded})`);

  // Errors carry the API's stable codes.
  try {
    await prism.sandboxes.get('no-such-sandbox');
  } catch (e) {
    if (!(e instanceof PrismApiError)) throw e;
    console.log(`lookup failed with ${e.code}`);
  }
} finally {
  await sb.delete();
}
