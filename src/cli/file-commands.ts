import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, stat, utimes } from 'node:fs/promises';
import { basename, dirname, join, posix, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Command } from 'commander';
import { c as tarCreate, x as tarExtract } from 'tar';
import { PrismApiError, type FileEntry, type Prism, type SandboxHandle } from '../sdk/index.js';
import { UsageError, type CliContext } from './context.js';
import { age, humanBytes, renderTable } from './output.js';

/** `SB:/path` -> remote; anything else (including `./a:b`) is a local path. */
export function parseCpArg(arg: string): { sandbox: string; path: string } | { local: string } {
  const m = /^([A-Za-z0-9][A-Za-z0-9_.-]*):(.*)$/.exec(arg);
  if (!m) return { local: arg };
  if (!m[2]!.startsWith('/')) throw new UsageError(`the path in '${arg}' must be absolute inside the sandbox (${m[1]}:/path)`);
  return { sandbox: m[1]!, path: m[2]! };
}

async function remoteStat(sb: SandboxHandle, path: string): Promise<FileEntry | undefined> {
  try {
    return await sb.files.stat(path);
  } catch (e) {
    if (e instanceof PrismApiError && e.code === 'NOT_FOUND') return undefined;
    throw e;
  }
}

const toWeb = (r: Readable) => Readable.toWeb(r) as unknown as ReadableStream<Uint8Array>;
const fromWeb = (s: ReadableStream<Uint8Array>) => Readable.fromWeb(s as unknown as WebReadableStream<Uint8Array>);

/**
 * Like `docker cp`: into an existing directory the copy keeps its name; otherwise it takes the
 * destination's name. Directories travel as tar streams (modes, mtimes and symlinks kept).
 */
async function upload(client: Prism, local: string, ref: string, dest: string): Promise<string> {
  const st = await stat(local).catch(() => undefined);
  if (!st) throw new UsageError(`no such local file or directory: ${local}`);
  const sb = await client.sandboxes.get(ref);
  const target = await remoteStat(sb, dest);
  const into = target?.type === 'dir' || dest.endsWith('/');
  if (st.isDirectory()) {
    const abs = resolve(local);
    // Not node-tar's `portable`: it zeroes directories' mtimes (owners are not restored anyway).
    const tar = into
      ? tarCreate({ cwd: dirname(abs) }, [basename(abs)])
      : tarCreate({ cwd: abs }, ['.']);
    await sb.files.uploadArchive(dest, toWeb(Readable.from(tar)));
    return into ? posix.join(dest, basename(abs)) : dest;
  }
  if (!st.isFile()) throw new UsageError(`${local} is neither a regular file nor a directory`);
  const path = into ? posix.join(dest, basename(local)) : dest;
  await sb.files.write(path, toWeb(createReadStream(local)), { mode: st.mode & 0o7777 });
  return path;
}

async function download(client: Prism, ref: string, src: string, local: string): Promise<string> {
  const sb = await client.sandboxes.get(ref);
  const entry = await sb.files.stat(src);
  const lst = await stat(local).catch(() => undefined);
  const into = lst?.isDirectory() === true;
  if (entry.type === 'dir') {
    const dest = into ? join(local, posix.basename(src) || 'root') : local;
    await mkdir(dest, { recursive: true });
    // Entries are named "<basename>/...": strip that, so the copy takes dest's name.
    const strip = posix.basename(posix.resolve(src)) === '' ? 0 : 1;
    // node-tar stamps a directory when it makes it, then its children change it again: put the
    // archive's directory mtimes back once everything is written, deepest first.
    const dirTimes: [string, Date][] = [];
    const onentry = (e: { type: string; path: string; mtime?: Date }) => {
      if (e.type === 'Directory' && e.mtime) dirTimes.push([e.path, e.mtime]);
    };
    await pipeline(fromWeb(await sb.files.downloadArchive(src)), tarExtract({ cwd: dest, strip, onentry }));
    for (const [path, mtime] of dirTimes.reverse()) {
      const parts = path.split('/').filter(Boolean).slice(strip);
      await utimes(join(dest, ...parts), mtime, mtime).catch(() => undefined);
    }
    return dest;
  }
  const dest = into ? join(local, posix.basename(src)) : local;
  await pipeline(fromWeb(await sb.files.readStream(src)), createWriteStream(dest, { mode: entry.mode & 0o777 }));
  return dest;
}

export function registerFileCommands(sandbox: Command, ctx: CliContext): void {
  sandbox
    .command('cp')
    .description('copy files and directories between the local machine and a sandbox (SB:/path), like docker cp')
    .argument('<src>', 'LOCAL or SB:/path')
    .argument('<dest>', 'SB:/path or LOCAL')
    .action(async (src: string, dest: string, _opts: unknown, cmd: Command) => {
      const from = parseCpArg(src);
      const to = parseCpArg(dest);
      const client = ctx.client(cmd);
      let done: string;
      if ('local' in from && 'sandbox' in to) done = `${to.sandbox}:${await upload(client, from.local, to.sandbox, to.path)}`;
      else if ('sandbox' in from && 'local' in to) done = await download(client, from.sandbox, from.path, to.local);
      else throw new UsageError('exactly one of <src> and <dest> must be in a sandbox (SB:/path)');
      if (ctx.format(cmd) === 'json') return ctx.json({ copied: done });
      ctx.out(`copied to ${done}`);
    });

  const files = sandbox.command('files').description("list a sandbox's files");
  files
    .command('ls')
    .description('list a directory in a sandbox')
    .argument('<sandbox>', 'sandbox id or name')
    .argument('[path]', 'absolute path in the sandbox', '/')
    .action(async (ref: string, path: string, _opts: unknown, cmd: Command) => {
      const entries = await (await ctx.client(cmd).sandboxes.get(ref)).files.list(path);
      if (ctx.format(cmd) === 'json') return ctx.json({ path, entries });
      const now = new Date();
      ctx.out(
        renderTable(
          ['MODE', 'SIZE', 'MODIFIED', 'NAME'],
          entries.map((e) => [
            `${e.type === 'dir' ? 'd' : e.type === 'symlink' ? 'l' : '-'}${e.mode.toString(8).padStart(4, '0')}`,
            e.type === 'file' ? humanBytes(e.size) : '-',
            age(e.mtime, now),
            e.linkTarget !== undefined ? `${e.name} -> ${e.linkTarget}` : e.type === 'dir' ? `${e.name}/` : e.name,
          ]),
        ),
      );
    });
}
