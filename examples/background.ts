/**
 * A background process: started, fed over stdin, its output streamed as it comes, waited for; another
 * one ended with a signal; and a foreground command read as an async iterator.
 *
 *   node dist/examples/background.js
 */
import { Prism } from 'prism-sandbox';

const prism = Prism.fromEnv();
const sb = await prism.sandboxes.create();
try {
  const script = 'import sys\nfor line in sys.stdin:\n    print("echo:", line.strip(), flush=True)\nprint("bye")';
  const p = await sb.exec(['python3', '-c', script], { background: true });
  console.log(`started ${p.id}: ${p.status}`);
  await p.write('hello\n');
  await p.write('world\n');
  await p.closeStdin();
  for await (const ev of p.stream({ since: 0 })) {
    if (ev.type === 'exit') console.log(`exit ${ev.process.exitCode}`);
    else process.stdout.write(new TextDecoder().decode(ev.data));
  }

  // The process runs on whatever this program does; here it is stopped with a signal.
  const sleeper = await sb.processes.start('sleep 300');
  await sleeper.signal('SIGTERM');
  const done = await sleeper.wait({ timeoutMs: 10_000 });
  console.log(`sleeper ended by ${done.signal}`);

  for await (const ev of sb.execStream('echo streamed; exit 3')) {
    if (ev.type === 'exit') console.log(`foreground exit ${ev.exit.exitCode}`);
    else process.stdout.write(new TextDecoder().decode(ev.data));
  }
} finally {
  await sb.delete();
}
