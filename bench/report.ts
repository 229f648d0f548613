/**
 * docs/benchmarks.md and its charts (docs/benchmarks/*.svg) from the JSON the benches wrote in one run
 * (scripts/bench-report.sh runs them all into one directory, then this). Only what that directory
 * holds is shown; every ratio on the page is between numbers of that same run.
 *
 * Usage: node dist/bench/report.js <results-dir> [docs-dir]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

const [resultsDir, docsDir = 'docs'] = process.argv.slice(2);
if (!resultsDir) {
  process.stderr.write('usage: report.js <results-dir> [docs-dir]\n');
  process.exit(2);
}

type Json = Record<string, any>;
const load = (name: string): Json | undefined => {
  const f = join(resultsDir, `${name}.json`);
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Json) : undefined;
};

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Horizontal bars (median) with a thin line to the p90, one row per entry. */
function latencyChart(title: string, rows: { label: string; median: number; p90?: number; prism: boolean }[]): string {
  const w = 720;
  const left = 250;
  const rowH = 28;
  const h = 40 + rows.length * rowH + 30;
  const max = Math.max(...rows.map((r) => r.p90 ?? r.median)) * 1.1;
  const x = (v: number) => left + ((w - left - 60) * v) / max;
  const parts = [`<text x="10" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`];
  rows.forEach((r, i) => {
    const y = 40 + i * rowH;
    parts.push(`<text x="${left - 8}" y="${y + 15}" font-size="12" text-anchor="end">${esc(r.label)}</text>`);
    parts.push(`<rect x="${left}" y="${y + 3}" width="${x(r.median) - left}" height="16" fill="${r.prism ? '#3b6fd6' : '#9a9a9a'}"/>`);
    if (r.p90 !== undefined) parts.push(`<line x1="${x(r.median)}" y1="${y + 11}" x2="${x(r.p90)}" y2="${y + 11}" stroke="#333" stroke-width="1.5"/>`);
    parts.push(`<text x="${x(r.p90 ?? r.median) + 6}" y="${y + 15}" font-size="12">${r.median.toFixed(1)} ms</text>`);
  });
  parts.push(`<text x="${left}" y="${h - 8}" font-size="11" fill="#555">bar: median; line: to p90; blue: Prism, grey: baseline</text>`);
  return svg(w, h, parts);
}

/** Grouped bars per concurrency level: one bar per series. */
function groupedChart(title: string, unit: string, groups: string[], series: { name: string; color: string; values: number[] }[]): string {
  const w = 720;
  const h = 300;
  const left = 60;
  const bottom = h - 50;
  const max = Math.max(...series.flatMap((s) => s.values)) * 1.15 || 1;
  const gw = (w - left - 20) / groups.length;
  const bw = (gw - 20) / series.length;
  const y = (v: number) => bottom - ((bottom - 40) * v) / max;
  const parts = [`<text x="10" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`, `<line x1="${left}" y1="${bottom}" x2="${w - 10}" y2="${bottom}" stroke="#333"/>`];
  groups.forEach((g, gi) => {
    series.forEach((s, si) => {
      const v = s.values[gi] ?? 0;
      const bx = left + gi * gw + 10 + si * bw;
      parts.push(`<rect x="${bx}" y="${y(v)}" width="${bw - 4}" height="${bottom - y(v)}" fill="${s.color}"/>`);
      parts.push(`<text x="${bx + (bw - 4) / 2}" y="${y(v) - 4}" font-size="11" text-anchor="middle">${v}</text>`);
    });
    parts.push(`<text x="${left + gi * gw + gw / 2}" y="${bottom + 18}" font-size="12" text-anchor="middle">${esc(g)}</text>`);
  });
  series.forEach((s, si) => {
    parts.push(`<rect x="${left + si * 190}" y="${h - 22}" width="12" height="12" fill="${s.color}"/>`, `<text x="${left + si * 190 + 18}" y="${h - 12}" font-size="12">${esc(s.name)}</text>`);
  });
  parts.push(`<text x="10" y="${bottom - (bottom - 40) / 2}" font-size="11" fill="#555" transform="rotate(-90 14 ${bottom - (bottom - 40) / 2})">${esc(unit)}</text>`);
  return svg(w, h, parts);
}

function svg(w: number, h: number, parts: string[]): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif">\n<rect width="${w}" height="${h}" fill="#fff"/>\n${parts.join('\n')}\n</svg>\n`;
}

function machine(): string {
  const sh = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).trim();
    } catch {
      return '?';
    }
  };
  const os = /PRETTY_NAME="([^"]+)"/.exec(existsSync('/etc/os-release') ? readFileSync('/etc/os-release', 'utf8') : '')?.[1] ?? '?';
  const cg = existsSync('/sys/fs/cgroup/cgroup.controllers') && readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8').includes('memory') ? 'v2' : 'v1';
  return `${os}, kernel ${sh('uname', ['-r'])}, ${cpus().length} x ${cpus()[0]?.model ?? '?'}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM, cgroup ${cg}, ${sh('runc', ['--version']).split('\n')[0]}, Node ${process.version}`;
}

const pages: string[] = [];
const charts = join(docsDir, 'benchmarks');
mkdirSync(charts, { recursive: true });
const chart = (file: string, body: string, alt: string) => {
  writeFileSync(join(charts, file), body);
  pages.push(`![${alt}](benchmarks/${file})\n`);
};

pages.push(`# Benchmarks

Generated by \`npm run bench:report\` (scripts/bench-report.sh: every bench below, one after another on
one machine, then bench/report.ts) from the JSON in one results directory: every number and ratio on
this page is from that one run, Prism and its baseline measured side by side. Latencies are medians
with p90 (or p95/p99 where said) over the runs each bench states. Re-run it on your own machine with
\`sudo npm run bench:report\`; the raw JSON is kept beside the charts (docs/benchmarks/*.json).

Machine: ${machine()}.
Generated: ${new Date().toISOString()}.
`);

const lat = load('oci-latency');
if (lat) {
  pages.push(`## Create and exec latency (oci)\n\nbench/oci-latency.ts, ${lat.runs} runs each. A create is \`POST /sandboxes\` then a streamed \`echo ready\` until its first byte; the baseline is a bare \`runc run\` of \`echo ready\` on the same layers and config. "From the warm pool": \`--warm-pool 2\`, each create served by a ready container.\n`);
  chart('oci-latency.svg', latencyChart('Create to first output, exec round trip (ms)', [
    { label: 'bare runc run (echo)', median: lat.bare.runForeground.medianMs, p90: lat.bare.runForeground.p90Ms, prism: false },
    { label: 'bare runc run -d + runc exec', median: lat.bare.runDetachedThenExec.medianMs, p90: lat.bare.runDetachedThenExec.p90Ms, prism: false },
    { label: 'Prism create, cold', median: lat.prism.createToFirstOutput.medianMs, p90: lat.prism.createToFirstOutput.p90Ms, prism: true },
    ...(lat.pooled ? [{ label: 'Prism create, from the warm pool', median: lat.pooled.createToFirstOutput.medianMs, p90: lat.pooled.createToFirstOutput.p90Ms, prism: true }] : []),
    { label: 'bare runc exec (true)', median: lat.bare.exec.medianMs, p90: lat.bare.exec.p90Ms, prism: false },
    { label: 'Prism exec round trip (true)', median: lat.prism.execRoundTrip.medianMs, p90: lat.prism.execRoundTrip.p90Ms, prism: true },
  ]), 'create and exec latency');
  pages.push(`| ratio | value | target |\n|---|---|---|\n${Object.entries(lat.ratios).map(([k, v]) => `| ${k} | ${String(v)} | ${lat.targets?.[k] ?? '-'} |`).join('\n')}\n`);
}

const tp = load('throughput');
if (tp) {
  const levels = Object.keys(tp.prism);
  pages.push(`## Throughput against concurrency (oci)\n\nbench/throughput.ts: ${tp.perLevel} creates, then as many deletes, at each number in flight. Prism: \`POST /sandboxes\` until \`running\` (cold: no warm pool); baseline: \`runc run -d\` / \`runc delete -f\` with a bundle per container.\n`);
  chart('throughput-create.svg', groupedChart('Creates per second by creates in flight', 'creates/s', levels.map((l) => `${l} in flight`), [
    { name: 'bare runc run -d', color: '#9a9a9a', values: levels.map((l) => tp.bare[l].create.perSec) },
    { name: 'Prism create', color: '#3b6fd6', values: levels.map((l) => tp.prism[l].create.perSec) },
  ]), 'creates per second');
  chart('throughput-delete.svg', groupedChart('Deletes per second by deletes in flight', 'deletes/s', levels.map((l) => `${l} in flight`), [
    { name: 'bare runc delete -f', color: '#9a9a9a', values: levels.map((l) => tp.bare[l].delete.perSec) },
    { name: 'Prism delete', color: '#3b6fd6', values: levels.map((l) => tp.prism[l].delete.perSec) },
  ]), 'deletes per second');
  pages.push(`| in flight | Prism creates/s (p50 / p95 / p99 ms) | bare creates/s | ratio | Prism deletes/s | bare deletes/s | ratio |\n|---|---|---|---|---|---|---|\n${levels.map((l) => {
    const p = tp.prism[l];
    const b = tp.bare[l];
    return `| ${l} | ${p.create.perSec} (${p.create.p50Ms} / ${p.create.p95Ms} / ${p.create.p99Ms}) | ${b.create.perSec} | ${tp.ratios[l].create} | ${p.delete.perSec} | ${b.delete.perSec} | ${tp.ratios[l].delete} |`;
  }).join('\n')}\n\nTarget: >= 0.5x bare at each level.\n`);
}

/** Creates/s of each hundred in turn (the first hundred is the same run's baseline), when the run has them. */
function byHundredLine(r: Json | undefined): string {
  const h = r?.createsPerSecByHundred as number[] | undefined;
  if (!h?.length) return '';
  return `\nCreates/s of each hundred in turn (sampler on): ${h.join(', ')}; the last hundred at ${Math.round((h[h.length - 1]! / h[0]!) * 100) / 100}x the first.\n`;
}

const den = load('density');
if (den) {
  const row = (label: string, r: Json | undefined) => r ? `| ${label} | ${r.created} | ${r.execsOk} | ${r.hostMemoryPerSandboxMiB} | ${r.createsPerSec} | ${r.deletesPerSec} | ${r.prismdIdle.empty.cpuPercentOfOneCore}% / ${r.prismdIdle.empty.rssMiB} MiB | ${r.prismdIdle.withSandboxes.cpuPercentOfOneCore}% / ${r.prismdIdle.withSandboxes.rssMiB} MiB | ${r.restart ? `${(r.restart.ms / 1000).toFixed(1)} s, ${r.restart.runningAfter} running` : '-'} |` : '';
  pages.push(`## Density (oci)\n\nbench/density.ts: ${den.count} sandboxes of ${den.sandbox.memoryMb} MiB, ${den.sandbox.cpus} CPU and a ${den.sandbox.diskMb} MiB disk on one node (\`--cpu-overcommit 64\`), ${den.concurrency} creates in flight, an exec in every one, then idle. Host memory per sandbox: MemTotal - MemAvailable after minus before, over the count. prismd idle: CPU (% of one core) and RSS over an idle window, before the creates and with every sandbox running. Restart: prismd stopped and started again with every sandbox running, until its API answers (every task recovered).\n\n| usage sampler | created | exec ok | host MiB per sandbox | creates/s | deletes/s | prismd idle, empty | prismd idle, all running | restart |\n|---|---|---|---|---|---|---|---|---|\n${[row('every 5 s (default)', den.samplerDefault), row('off (--metrics-interval 0)', den.samplerOff)].filter(Boolean).join('\n')}\n\nTargets: ${den.targets.sandboxes} sandboxes with an exec in each, <= ${den.targets.hostMemoryPerSandboxMiB} MiB of host memory per idle sandbox.\n${byHundredLine(den.samplerDefault)}`);
}

const lc = load('lifecycle');
if (lc) {
  const s = lc.samples as Record<string, { medianMs: number; p90Ms: number }>;
  const rows = (lc.runtimes as string[]).flatMap((r) => ['pause', 'resume', 'stop', 'start'].filter((op) => s[`${r}.${op}`]).map((op) => ({ label: `${r} ${op}`, median: s[`${r}.${op}`]!.medianMs, p90: s[`${r}.${op}`]!.p90Ms, prism: op === 'pause' || op === 'resume' })));
  pages.push(`## Pause, resume, snapshots and forks\n\nbench/lifecycle.ts through the API of one prismd (microVMs under ${existsSync('/dev/kvm') ? 'the accelerator the node probed' : 'TCG'}). Blue: pause and resume; grey: stop and start of the same sandbox for comparison.\n`);
  chart('lifecycle.svg', latencyChart('Pause / resume beside stop / start (ms)', rows), 'pause and resume latency');
  const f = ['microvm.restore1', 'microvm.fork1', 'microvm.fork4'].filter((k) => s[k]);
  if (f.length) {
    pages.push(`| microVM memory snapshots | median ms | p90 ms |\n|---|---|---|\n${f.map((k) => `| ${k.replace('microvm.', '')} | ${s[k]!.medianMs} | ${s[k]!.p90Ms} |`).join('\n')}\n\nfork of 4 / one restore: ${lc.microvmFork?.fork4VsRestore1} (target: ${lc.microvmFork?.target}). microVM host memory (QEMU's own plus its guest RAM file): ${lc.microvmMemory ? `${lc.microvmMemory.runningHostMemoryMiB} MiB running, ${lc.microvmMemory.pausedHostMemoryMiB} MiB paused (${lc.microvmMemory.pausedStateOnDiskMiB} MiB of state on disk)` : 'not measured'}.\n`);
  }
}

const cl = load('cluster-placement');
if (cl) {
  const { steady, burst } = cl.prism;
  const raw = cl.baseline.rawPutsPerSec.all as number[];
  const ms = (r: Json) => (r.etcdCpuMsPerCreate as number[] | undefined)?.join(' / ') ?? '-';
  const rpcs = (r: Json) => {
    const per = r.etcdRpcsPerCreate ?? {};
    const calls = Object.entries(per).filter(([k]) => k === 'Range' || k === 'Txn').map(([k, v]) => `${String(v)} ${k}`).join(', ');
    return per['keys put'] === undefined ? calls : `${calls}; ${per['keys put']} keys put, ${per['watch events'] ?? 0} watch events`;
  };
  pages.push(`## Cluster control plane (3 nodes, 3-member etcd)\n\nbench/cluster-placement.ts: ${cl.runs} runs of ${cl.n} creates through 3 nodes in one process (fake driver: the control plane alone) on a 3-member etcd on loopback, beside raw etcd puts of a record-sized value (the etcd3 client) in the same runs, ${cl.concurrency} in flight, after ${cl.warmupRounds ?? 1} unmeasured round(s) of each. Steady: ${cl.concurrency} creates in flight; burst: waves of ${cl.burst} at once. A create ends when its record is \`running\`. ${cl.directCreates === false ? 'Direct creates off: the scheduler placed every create.' : `Direct creates on (src/service/direct-create.ts): made by the node they came to, in one write, ${(steady.madeDirectly ?? []).join(' / ')} of ${cl.n} per steady run, the rest placed by the scheduler.`} The ratio is each run's creates/s over the same run's raw puts/s (raw puts drift between runs on a shared host), median over the runs. Both sides are bound by this one process's event loop (busy ${steady.benchEventLoopBusy.join(' / ')} creating, ${(cl.baseline.rawPutsEventLoopBusy ?? []).join(' / ')} putting).\n`);
  chart('cluster-placement.svg', groupedChart('Raw etcd puts and Prism creates per second, by run', 'per second', raw.map((_, i) => `run ${i + 1}`), [
    { name: 'raw etcd puts', color: '#9a9a9a', values: raw },
    { name: 'Prism creates, steady', color: '#3b6fd6', values: steady.createdPerSec.all },
    { name: 'Prism creates, burst', color: '#8fb0ee', values: burst.createdPerSec.all },
  ]), 'cluster creates per second');
  // CPU per op, this process (the etcd3 client, or the 3 nodes) + etcd, run by run.
  const cpu = (xs: { bench: number; etcd: number }[] | undefined) => xs?.map((c) => `${c.bench} + ${c.etcd}`).join(' / ') ?? '-';
  const cpuRatio = (r: Json) => (r.rawPutCpuVsCreateCpu ? `${r.rawPutCpuVsCreateCpu.median} (${r.rawPutCpuVsCreateCpu.all.join(' / ')})` : '-');
  const row = (label: string, r: Json) => `| ${label} | ${r.createdPerSec.median} | ${r.createdVsRawPutsPerRun?.median ?? '-'} (${(r.createdVsRawPutsPerRun?.all ?? []).join(' / ')}) | ${r.createLatency.medianMs} / ${r.createLatency.p90Ms} | ${rpcs(r)} | ${ms(r)} | ${cpu(r.cpuMsPerCreate)} | ${cpuRatio(r)} |`;
  pages.push(`| | per second (median) | vs raw puts (paired, per run) | create p50 / p90 ms | etcd per create: RPCs; keys written, watch events sent | etcd CPU ms per op | CPU ms per op: nodes (or client) + etcd | raw put CPU / create CPU |\n|---|---|---|---|---|---|---|---|\n| raw etcd puts | ${cl.baseline.rawPutsPerSec.median} | - | - | 1 Put | ${(cl.baseline.etcdCpuMsPerRawPut ?? []).join(' / ')} | ${cpu(cl.baseline.cpuMsPerRawPut)} | - |\n${row('Prism creates, steady', steady)}\n${row('Prism creates, burst', burst)}\n\nTarget: creates >= ${cl.targets?.createdVsRawPutsPerRun ?? 0.5}x raw etcd puts at the same concurrency. The scheduler alone places a backlog at ${cl.schedulerBacklog?.placedPerSec?.median ?? '-'}/s. The last column is the same comparison in work rather than time: CPU per raw put over CPU per create, this process and etcd together, each run paired. Where the host's cores are the limit (both sides here), it is the share of raw puts' rate creates can reach, and other load on the host moves it less than the rates.\n`);
}

const dk = load('docker-vs-oci');
if (dk) {
  const variants = (['oci', 'docker', 'dockerPool', 'dockerNoDiskLimit'] as const).filter((v) => dk[v]);
  const label: Record<string, string> = { oci: 'oci (runc)', docker: 'docker, cold', dockerPool: 'docker, from the warm pool', dockerNoDiskLimit: 'docker, no disk limit' };
  pages.push(`## Docker beside oci\n\nbench/docker-vs-oci.ts, ${dk.runs} runs each, interleaved, at the RuntimeDriver seam on the same image layers: create then \`echo ready\` to its first byte, an exec round trip on a running task, and a destroy. The engine: ${dk.dockerHost}${dk.diskLimit?.enforced ? ', with a container size limit (StorageOpt)' : ''}. Warm pool: \`warmPool: 1\`, each create served by a ready container.\n`);
  chart('docker-vs-oci.svg', latencyChart('Create to first exec output, docker beside oci (ms)', variants.map((v) => ({ label: label[v]!, median: dk[v].createToFirstExec.medianMs, p90: dk[v].createToFirstExec.p90Ms, prism: v !== 'oci' }))), 'docker create latency');
  pages.push(`| driver | create to first exec, p50 / p90 ms | exec round trip p50 ms | destroy p50 ms |\n|---|---|---|---|\n${variants.map((v) => `| ${label[v]} | ${dk[v].createToFirstExec.medianMs} / ${dk[v].createToFirstExec.p90Ms} | ${dk[v].execRoundTrip?.medianMs ?? '-'} | ${dk[v].destroy?.medianMs ?? '-'} |`).join('\n')}\n\ndocker cold / oci: ${dk.createToFirstExecMedianRatio}; docker from the pool / docker cold: ${dk.pooledVsColdDockerMedianRatio}.\n`);
}

for (const name of ['oci-latency', 'throughput', 'density', 'lifecycle', 'cluster-placement', 'docker-vs-oci']) {
  const j = load(name);
  if (j) writeFileSync(join(charts, `${name}.json`), `${JSON.stringify(j, null, 2)}\n`);
}
writeFileSync(join(docsDir, 'benchmarks.md'), `${pages.join('\n')}`);
process.stdout.write(`wrote ${join(docsDir, 'benchmarks.md')}\n`);
