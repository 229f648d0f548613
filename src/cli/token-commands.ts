import type { Command } from 'commander';
import { writeConfig } from './cli-config.js';
import type { CliContext } from './context.js';
import { age, renderTable } from './output.js';

/** `token create|ls|rm` and `login`. */
export function registerTokenCommands(program: Command, ctx: CliContext): void {
  const token = program.command('token').description('manage API tokens');

  token
    .command('create')
    .description('create an API token (shown once)')
    .argument('<name>', 'a name for the token (lowercase letters, digits, -)')
    .option('--admin', 'it may also manage tokens, remove nodes and read the join token')
    .action(async (name: string, opts: { admin?: boolean }, cmd: Command) => {
      const t = await ctx.client(cmd).tokens.create(name, { admin: opts.admin === true });
      if (ctx.format(cmd) === 'json') return ctx.json(t);
      ctx.out(t.token);
      ctx.io.stderr.write(`${t.admin ? 'admin ' : ''}token '${t.name}' (${t.id}) created; it is shown only this once\n`);
    });

  token
    .command('ls')
    .alias('list')
    .description('list API tokens (never their secrets)')
    .action(async (_opts: unknown, cmd: Command) => {
      const tokens = await ctx.client(cmd).tokens.list();
      if (ctx.format(cmd) === 'json') return ctx.json({ tokens });
      const now = new Date();
      ctx.out(renderTable(['NAME', 'ID', 'ROLE', 'CREATED'], tokens.map((t) => [t.name, t.id, t.admin ? 'admin' : 'user', `${age(t.createdAt, now)} ago`])));
    });

  token
    .command('rm')
    .alias('revoke')
    .description('revoke API tokens; they stop working at once')
    .argument('<token...>', 'token ids or names')
    .action(async (ids: string[], _opts: unknown, cmd: Command) => {
      const client = ctx.client(cmd);
      for (const id of ids) {
        await client.tokens.revoke(id);
        ctx.out(id);
      }
    });

  program
    .command('login')
    .description("check a token against a daemon and save both for later prismctl calls (mode 0600)")
    .action(async (_opts: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<{ api?: string; token?: string }>();
      const token = o.token ?? ctx.io.env.PRISM_TOKEN;
      if (!token) throw new Error('give the token with --token or PRISM_TOKEN');
      const client = ctx.client(cmd);
      await client.clusterInfo(); // UNAUTHENTICATED here if the token is wrong
      const file = writeConfig(ctx.io.env, { url: client.url, token });
      ctx.out(`saved ${client.url} and its token in ${file}`);
    });
}
