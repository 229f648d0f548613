import { readFile, readdir } from 'node:fs/promises';

/** The parent pid from /proc/<pid>/stat; null when the process is gone. */
async function parentOf(pid: number): Promise<number | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parentheses; fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[1]);
  } catch {
    return null;
  }
}

/** Every live process as pid -> parent pid, from one walk of /proc. */
async function processTable(): Promise<Map<number, number>> {
  const names = await readdir('/proc');
  const table = new Map<number, number>();
  await Promise.all(
    names
      .filter((n) => /^\d+$/.test(n))
      .map(async (n) => {
        const ppid = await parentOf(Number(n));
        if (ppid !== null) table.set(Number(n), ppid);
      }),
  );
  return table;
}

/** `root` and all its descendants that are alive now (host pids). */
export async function processTree(root: number): Promise<number[]> {
  const table = await processTable();
  if (!table.has(root)) return [];
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of table) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  const tree: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    tree.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return tree;
}

function signalAll(pids: Iterable<number>, signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // Already gone: that is the goal.
    }
  }
}

/**
 * Signals `root` and every process it started. Killing only the root would orphan its children to the
 * task's init, and a parent killed before its children hides them from the ppid walk, so the tree is
 * first frozen with SIGSTOP (a stopped process cannot fork) until a walk finds no new member, and
 * only then signalled. For signals other than SIGKILL the tree is continued again afterwards.
 */
export async function killProcessTree(root: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const frozen = new Set<number>();
  for (let round = 0; round < 50; round++) {
    const tree = await processTree(root);
    const fresh = tree.filter((pid) => !frozen.has(pid));
    if (fresh.length === 0) break;
    signalAll(fresh, 'SIGSTOP');
    fresh.forEach((pid) => frozen.add(pid));
  }
  signalAll(frozen, signal);
  if (signal !== 'SIGKILL' && signal !== 'SIGSTOP') signalAll(frozen, 'SIGCONT');
}
