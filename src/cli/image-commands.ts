import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import type { Command } from 'commander';
import type { ImageRecord } from '../sdk/index.js';
import { printError, type CliContext } from './context.js';
import { age, humanBytes, renderFields, renderTable } from './output.js';
import { PullProgressView } from './pull-progress.js';

/** `image` and its subcommands: pull, ls, inspect, rm, import, gc. */
export function registerImageCommands(program: Command, ctx: CliContext): void {
  const image = program.command('image').alias('images').description('pull, list, inspect, import and remove images');

  image
    .command('pull <ref>')
    .description('pull an image from its registry (progress per layer)')
    .option('--platform <os/arch[/variant]>', 'platform to pick from a multi-platform image (default: this host)')
    .action(async (ref: string, f: { platform?: string }, cmd: Command) => {
      const opts: Parameters<ReturnType<CliContext['client']>['images']['pull']>[1] = {};
      if (f.platform) {
        const [os, architecture, variant] = f.platform.split('/');
        opts.platform = variant ? { os: os!, architecture: architecture!, variant } : { os: os!, architecture: architecture ?? '' };
      }
      const json = ctx.format(cmd) === 'json';
      const view = new PullProgressView(process.stderr);
      if (!json) opts.onProgress = (p) => view.update(p);
      const img = await ctx.client(cmd).images.pull(ref, opts);
      if (json) return ctx.json(img);
      view.finish();
      ctx.out(`pulled ${ref} (${img.digest}, ${humanBytes(img.size)})`);
    });

  image
    .command('ls')
    .alias('list')
    .description('list images')
    .action(async (_f: unknown, cmd: Command) => {
      const images = await ctx.client(cmd).images.list();
      if (ctx.format(cmd) === 'json') return ctx.json({ images });
      const rows = images.flatMap((i) => (i.refs.length ? i.refs : ['<none>']).map((r) => [r, short(i.digest), humanBytes(i.size), `${i.os}/${i.architecture}`, String(i.layers.length), age(i.createdAt)]));
      ctx.out(renderTable(['REF', 'DIGEST', 'SIZE', 'PLATFORM', 'LAYERS', 'CREATED'], rows));
    });

  image
    .command('inspect <ref>')
    .description('show an image: digest, platform, config, layers')
    .action(async (ref: string, _f: unknown, cmd: Command) => {
      const img = await ctx.client(cmd).images.get(ref);
      if (ctx.format(cmd) === 'json') return ctx.json(img);
      ctx.out(renderInspect(img));
    });

  image
    .command('rm <refs...>')
    .alias('remove')
    .description('remove images (refused while a sandbox uses one); unreferenced blobs are collected')
    .action(async (refs: string[], _f: unknown, cmd: Command) => {
      const client = ctx.client(cmd);
      for (const ref of refs) {
        try {
          await client.images.remove(ref);
          ctx.out(`removed ${ref}`);
        } catch (e) {
          printError(ctx.io, e);
          ctx.exitCode = 1;
        }
      }
    });

  image
    .command('import <file>')
    .description("import a 'docker save' archive or an OCI image layout tar ('-' reads stdin)")
    .option('--ref <ref>', 'name to tag the image with (needed when the archive names none)')
    .action(async (file: string, f: { ref?: string }, cmd: Command) => {
      const src = file === '-' ? process.stdin : createReadStream(file);
      const body = Readable.toWeb(src) as ReadableStream<Uint8Array>;
      const images = await ctx.client(cmd).images.import(body, f.ref ? { ref: f.ref } : {});
      if (ctx.format(cmd) === 'json') return ctx.json({ images });
      for (const i of images) ctx.out(`imported ${i.refs.join(', ') || '<none>'} (${i.digest})`);
    });

  image
    .command('gc')
    .description('remove blobs and unpacked layers no image references')
    .action(async (_f: unknown, cmd: Command) => {
      const r = await ctx.client(cmd).images.gc();
      if (ctx.format(cmd) === 'json') return ctx.json(r);
      ctx.out(`removed ${r.blobsRemoved} blobs and ${r.layersRemoved} unpacked layers, freed ${humanBytes(r.bytesFreed)}`);
    });
}

function short(digest: string): string {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}

function renderInspect(i: ImageRecord): string {
  const c = i.config;
  return (
    renderFields([
      ['Refs', i.refs.join(', ') || '<none>'],
      ['Digest', i.digest],
      ['Platform', `${i.os}/${i.architecture}`],
      ['Size', humanBytes(i.size)],
      ['Created', i.createdAt],
      ['User', c.user],
      ['Workdir', c.workingDir],
      ['Entrypoint', c.entrypoint ? JSON.stringify(c.entrypoint) : undefined],
      ['Cmd', c.cmd ? JSON.stringify(c.cmd) : undefined],
      ['Env', c.env.join(' ')],
    ]) + renderTable(['LAYER', 'SIZE', 'MEDIA TYPE'], i.layers.map((l) => [l.digest, humanBytes(l.size), l.mediaType]))
  );
}
