/**
 * An interactive terminal, driven by a program: the same session `prismctl sandbox shell` gives a
 * person. Types into a shell, interrupts a long command with Ctrl-C, resizes, and exits.
 *
 *   node dist/examples/terminal.js
 */
import { Prism } from 'prism-sandbox';

const prism = Prism.fromEnv();
const sb = await prism.sandboxes.create();
try {
  let screen = '';
  const shell = await sb.pty({ cols: 100, rows: 30, cmd: ['/bin/sh'], onData: (b) => (screen += new TextDecoder().decode(b)) });
  const waitFor = async (text: string) => {
    for (let i = 0; i < 200 && !screen.includes(text); i++) await new Promise((r) => setTimeout(r, 50));
    if (!screen.includes(text)) throw new Error(`terminal never showed '${text}':\n${screen}`);
  };

  shell.write('stty size; echo "tty: $(tty)"\n');
  await waitFor('tty: /dev/pts/');
  shell.resize(120, 40);
  shell.write('stty size\n');
  await waitFor('40 120');
  shell.write('echo "sleep st""arts"; sleep 100\n'); // the quotes keep the typed line from matching
  await waitFor('sleep starts');
  shell.write('\x03'); // Ctrl-C: the line discipline signals the foreground job, the shell lives on
  shell.write('echo "sleep ended $?"\n');
  await waitFor('sleep ended 130');
  shell.write('exit 7\n');
  const exit = await shell.wait();
  console.log(screen.includes('30 100') ? 'size 30x100, then 40x120' : 'size not seen');
  console.log('Ctrl-C interrupted sleep (status 130)');
  console.log(`shell exited with ${exit.exitCode}`);
} finally {
  await sb.delete();
}
