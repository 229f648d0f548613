/**
 * The loop an AI agent runs: the model writes code, the code runs in a sandbox, the result goes back
 * to the model, until it works. The "model" here is a scripted stand-in that makes a mistake first
 * and fixes it once it reads the traceback; put your LLM call in its place.
 *
 *   node dist/examples/agent-loop.js
 */
import { Prism, type SandboxHandle } from 'prism-sandbox';

interface Turn {
  code: string;
  feedback?: string;
}

/** Stand-in for an LLM: proposes code given the history of attempts and what they printed. */
function model(task: string, history: Turn[]): string {
  const last = history.at(-1);
  if (!last) {
    // First attempt: forgets the import, as models do.
    return 'data = [3, 1, 4, 1, 5, 9, 2, 6]\nprint("median:", statistics.median(data))\n';
  }
  if (last.feedback?.includes("NameError: name 'statistics' is not defined")) {
    return `import statistics\n${last.code}`;
  }
  throw new Error(`the stand-in model has no idea how to fix this for '${task}':\n${last.feedback}`);
}

/** One tool call: write the code to a file in the sandbox, run it, return what the model should read. */
async function runCode(sb: SandboxHandle, code: string): Promise<{ ok: boolean; feedback: string }> {
  await sb.files.write('/home/sandbox/work/main.py', code);
  const r = await sb.exec(['python3', 'main.py'], { cwd: '/home/sandbox/work', timeoutSec: 30 });
  const out = new TextDecoder().decode(r.stdout);
  const err = new TextDecoder().decode(r.stderr);
  if (r.limitExceeded) return { ok: false, feedback: `stopped: ${r.limitExceeded}\n${err}` };
  return { ok: r.exitCode === 0, feedback: r.exitCode === 0 ? out : `exit ${r.exitCode}\n${err}` };
}

const prism = Prism.fromEnv();
const sb = await prism.sandboxes.create({ memoryMb: 256, timeoutSec: 600 });
try {
  const task = 'print the median of a list';
  const history: Turn[] = [];
  for (let attempt = 1; attempt <= 3; attempt++) {
    const code = model(task, history);
    const { ok, feedback } = await runCode(sb, code);
    console.log(`attempt ${attempt}: ${ok ? 'ok' : 'failed'}`);
    if (ok) {
      console.log(`result: ${feedback.trim()}`);
      break;
    }
    history.push({ code, feedback });
  }
  // The sandbox keeps what the code wrote; read it back like any file.
  const saved = await sb.files.readText('/home/sandbox/work/main.py');
  console.log(`final program has ${saved.split('\n').filter(Boolean).length} lines`);
  const listing = await sb.files.list('/home/sandbox/work');
  console.log(`work dir: ${listing.map((e) => `${e.name} (${e.type}, ${e.size} bytes)`).join(', ')}`);
} finally {
  await sb.delete();
}
