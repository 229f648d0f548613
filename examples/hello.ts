/**
 * The smallest useful program: start a sandbox, run Python in it, print what it printed, clean up.
 *
 *   node dist/examples/hello.js
 *
 * Connects like prismctl: PRISM_API / PRISM_TOKEN, else the login the quick start saved.
 */
import { Prism } from 'prism-sandbox';

const prism = Prism.fromEnv();
const sb = await prism.sandboxes.create({ memoryMb: 256 });
try {
  const r = await sb.exec(['python3', '-c', 'print(6 * 7)'], { timeoutSec: 30 });
  if (r.exitCode !== 0) throw new Error(`python failed (${r.exitCode}): ${new TextDecoder().decode(r.stderr)}`);
  console.log(`sandbox ${sb.name} says ${r.text().trim()}`);
} finally {
  await sb.delete();
}
